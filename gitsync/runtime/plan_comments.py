"""The plan comment on pull requests: one comment per pull request, updated in place on every push to it.

A pull-request webhook (``gitsync.runtime.pull_requests``) hands its event here; the comment is made in the
background (``gitsync.queue.Outbox``, keyed by the pull request, so a burst of pushes plans only the newest head
still waiting) and never holds up the webhook's answer or a reconcile. The plan is ``gitsync plan``'s
(``gitsync.change_plan``), rendered from the agent's own Git cache at both commits, no cluster involved. The
comment carries the hidden ``MARKER``, by which the forge client finds it again (``ports.Forge.upsert_comment``),
and the pull request's head commit gets the ``gitsync/plan`` status (``plan_status``) linking to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gitsync import log as logging
from gitsync.change_plan import COMMENT_LIMIT, ChangePlan, markdown, plan_change
from gitsync.errors import GitsyncError
from gitsync.forge_queue import ForgeQueue
from gitsync.history import first_line
from gitsync.ports import CommitState, CommitStatus, Forge
from gitsync.runtime.config import Provider
from gitsync.runtime.pull_requests import PullRequestEvent

__all__ = ["MARKER", "PLAN_CONTEXT", "PlanComments", "comment_text", "plan_status"]

log = logging.get("gitsync.forge")

MARKER = "<!-- gitsync:plan -->"
"""Identifies gitsync's plan comment among a pull request's comments (invisible on the rendered page)."""


def comment_text(plan: ChangePlan | GitsyncError, base: str, head: str, base_ref: str, note: str = "") -> str:
    """The comment for merging ``head`` into ``base`` (full commit ids), within a comment's size limit, with
    ``note`` (how the plan was made) under its title; a plan that could not be made (a commit the repository
    does not have) says so instead."""
    title = f"### gitsync plan: `{head[:12]}` into `{base_ref}` at `{base[:12]}`\n\n"
    title += f"{note}\n\n" if note else ""
    if isinstance(plan, GitsyncError):
        return f"{MARKER}\n{title}gitsync could not plan this change: {plan}\n"
    # The title replaces the plan's own heading (the same commits, without the branch).
    body = markdown(plan, COMMENT_LIMIT - len(MARKER) - len(title) - 1).partition("\n")[2].lstrip("\n")
    return f"{MARKER}\n{title}{body}"


PLAN_CONTEXT = "gitsync/plan"
"""The commit status on a pull request's head, as Atlantis's ``atlantis/plan``: a branch protection rule can
require it, so a change whose head does not render cannot be merged."""


def plan_status(plan: ChangePlan | GitsyncError, head: str, url: str) -> CommitStatus:
    """What the pull request's head commit says of its plan: success when it renders everywhere (naming what
    changes), failure naming the app-envs that do not render at the head, error when no plan could be made."""
    if isinstance(plan, GitsyncError):
        return CommitStatus(head, PLAN_CONTEXT, CommitState.ERROR, first_line(f"could not plan: {plan}"), url)
    if plan.errors:
        broken = ", ".join(a.key for a in plan.errors)
        return CommitStatus(head, PLAN_CONTEXT, CommitState.FAILURE, first_line(f"does not render: {broken}"), url)
    now = [a.key for a in plan.apps if a.objects]
    later = [a.key for a in plan.apps if a.waits_for_promotion and not a.objects]
    said = [f"deploys {', '.join(now)}" if now else "", f"then promotion: {', '.join(later)}" if later else ""]
    description = "; ".join(s for s in said if s) or "changes no environment"
    return CommitStatus(head, PLAN_CONTEXT, CommitState.SUCCESS, first_line(description), url)


class PlanComments:
    """Posts or updates the plan comment of each pull-request event, in the background."""

    def __init__(
        self,
        forge: Forge,
        trees: Callable[[str], Path],
        base_head: Callable[[], str],
        merge: Callable[[str, str, str], str],
        capacity: int = 64,
    ) -> None:
        """``trees``: commit id -> the repository's tree at it (fetched by id); ``base_head``: the watched branch's
        head, for forges whose event names no base commit (GitLab); ``merge``: (base, head, merge base) -> a
        commit of their file-by-file merge, "" when a file changed on both sides
        (``GitRepository.merge_commit``)."""
        self._forge = forge
        self._trees = trees
        self._base_head = base_head
        self._merge = merge
        self.queue = ForgeQueue("plan-comments", capacity)

    def on_pull_request(self, provider: Provider, event: PullRequestEvent) -> None:
        received = time.monotonic()
        self.queue.put(f"{provider}#{event.number}", lambda: self._comment(event, received))

    def _comment(self, event: PullRequestEvent, received: float) -> None:
        base = event.base or self._base_head()
        planned, note = event.head, ""
        if event.merge_base and event.merge_base not in (base, event.head):
            # The base moved on since the branch forked: the branch alone would seem to undo what the base got
            # since. The merge is what deploys; when a file changed on both sides, the branch's own changes.
            try:
                merged = self._merge(base, event.head, event.merge_base)
            except GitsyncError:
                merged = ""
            if merged:
                planned = merged
                note = f"The branch is behind `{event.base_ref}`: this is the plan of merging it as it is now."
            else:
                base = event.merge_base
                note = (
                    f"The branch is behind `{event.base_ref}` and changes files it changed too: this is the plan of "
                    f"the branch's own changes, from where it forked (`{base[:12]}`); update the branch for the "
                    "plan of the merge."
                )
        try:
            plan: ChangePlan | GitsyncError = plan_change(self._trees, base, planned)
        except GitsyncError as e:
            plan = e
        url = self._forge.upsert_comment(
            event.number, MARKER, comment_text(plan, base, event.head, event.base_ref, note)
        )
        self._forge.set_status(plan_status(plan, event.head, url))
        log.info(
            "forge.plan_commented",
            pull_request=event.number,
            head=event.head[:12],
            base=base[:12],
            url=url,
            seconds=round(time.monotonic() - received, 3),
        )
