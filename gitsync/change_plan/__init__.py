"""``gitsync plan``: what merging a change does to each environment, for a reviewer, from Git alone.

``plan_change(trees, base, head, env=None)`` renders every app of every environment at both commits and returns
a frozen ``ChangePlan`` (``gitsync.change_plan.model``); ``markdown(plan, limit)`` makes it a pull-request
comment (summary table, collapsible diffs, capped at ``limit`` characters with the cut said), ``text`` and
``as_json`` the other outputs. Secret values never appear in any of them. Usage from a local checkout::

    from gitsync.adapters.trees import LocalTrees
    plan = plan_change(LocalTrees(repo), base_sha, head_sha)
    body = markdown(plan, COMMENT_LIMIT)
"""

from gitsync.change_plan.build import Live, plan_change
from gitsync.change_plan.model import AppPlan, Change, ChangePlan, ObjectDiff, Rollout
from gitsync.change_plan.report import COMMENT_LIMIT, as_json, markdown, text

__all__ = [
    "COMMENT_LIMIT",
    "AppPlan",
    "Change",
    "ChangePlan",
    "Live",
    "ObjectDiff",
    "Rollout",
    "as_json",
    "markdown",
    "plan_change",
    "text",
]
