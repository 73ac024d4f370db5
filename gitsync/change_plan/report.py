"""A ``ChangePlan`` as a pull-request comment (markdown), as text for a terminal, and as JSON. Pure.

The markdown leads with one summary table, so a reviewer sees every environment at a glance, then each object's
diff folded in a ``<details>`` block. It is capped at ``limit`` characters (GitHub refuses a comment over 65,536):
whole blocks are left out from the first that does not fit, and the comment says how many diffs it leaves out;
a diff too large for any comment shows its first lines rather than nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gitsync.change_plan.model import AppPlan, Change, ChangePlan, ObjectDiff, Rollout

__all__ = ["COMMENT_LIMIT", "as_json", "markdown", "text"]

COMMENT_LIMIT = 65_536
"""GitHub's limit on a comment's body, in characters; Gitea's and GitLab's are larger."""
_CUT_RESERVE = 400
"""Room kept for the closing lines that say what was cut."""
_SHORT = 12
_SHORTEST_CUT = 1_000
"""Room below which a diff too large for any comment is left out rather than shown cut short."""
_DETAILS_FRAME = 400
"""Room a diff shown cut short keeps for its summary line, its fences and the line saying how many more."""


def markdown(plan: ChangePlan, limit: int = COMMENT_LIMIT) -> str:
    """The plan as one comment of at most ``limit`` characters: summary table first, then collapsible diffs."""
    head = _summary(plan)
    blocks: list[tuple[str, ObjectDiff | None]] = []  # (text, the object diff it shows)
    for app in plan.apps:
        for title, diffs in _sections(app):
            if diffs:
                blocks.append((f"#### {title}\n", None))
                blocks.extend((_details(d), d) for d in diffs)
    total = sum(1 for _, d in blocks if d is not None)
    budget = limit - _CUT_RESERVE
    if len(head) > budget:
        return _cut(head, limit)
    out, shown, short = [head], 0, 0
    size = len(head)
    for block, diff in blocks:
        if size + len(block) > budget:
            # A diff that could never fit whole (one huge ConfigMap) shows its beginning rather than nothing.
            if diff is not None and len(block) > budget - len(head) and budget - size > _SHORTEST_CUT:
                out.append(_details(diff, budget - size))
                short = 1
            break
        out.append(block)
        size += len(block)
        shown += diff is not None
    if shown < total:
        left_out = total - shown - short
        said = [
            f"{left_out} of {total} object diffs are not shown" if left_out else "",
            "1 is cut short" if short else "",
        ]
        out.append(
            f"\n> :scissors: Cut to fit {limit:,} characters: {', '.join(filter(None, said))} "
            "(`gitsync plan -o text` prints them all).\n"
        )
    return "\n".join(out).rstrip("\n") + "\n"


def _summary(plan: ChangePlan) -> str:
    lines = [f"### gitsync plan `{plan.base[:_SHORT]}`..`{plan.head[:_SHORT]}`", ""]
    if not plan.apps:
        lines.append("No changes: every environment renders the same objects at both commits.")
    else:
        live = any(a.live is not None for a in plan.apps)
        header = ["env", "app", "added", "changed", "removed", "images", "rollout", "promotion"]
        lines += [_row([*header, *(["live"] if live else [])]), _row(["---"] * (len(header) + live))]
        for a in plan.apps:
            cells = [
                a.env,
                a.app or "—",
                str(a.count(Change.ADDED)),
                str(a.count(Change.CHANGED)),
                str(a.count(Change.REMOVED)),
                "<br>".join(f"`{b or '∅'}` → `{c or '∅'}`" for b, c in a.images) or "—",
                ":x: error" if a.error else str(a.rollout),
                _waits(a) if a.waits_for_promotion else "—",
            ]
            if live:
                cells.append("—" if a.live is None else f"{_objects(len(a.live))} differ" if a.live else "in sync")
            lines.append(_row(cells))
    lines.append("")
    lines += [f"- :x: `{a.key}`: {_inline(a.error)}" for a in plan.apps if a.error]
    lines += [f"- :information_source: `{a.key}`: {_inline(a.note)}" for a in plan.apps if a.note]
    if plan.unchanged:
        if lines[-1]:  # right after the notes' list, markdown would fold this line into the last bullet
            lines.append("")
        lines.append(f"Unchanged: {', '.join(f'`{k}`' for k in plan.unchanged)}.")
    return "\n".join(lines).rstrip("\n") + "\n"


def _sections(app: AppPlan) -> list[tuple[str, Sequence[ObjectDiff]]]:
    return [
        (f"`{app.key}`", app.objects),
        (f"`{app.key}`: after promotion from `{app.promotion_from}`", app.pending),
        (f"`{app.key}`: against the cluster (server-side dry-run)", app.live or ()),
    ]


def _details(diff: ObjectDiff, room: int | None = None) -> str:
    """``diff`` folded in a ``<details>`` block; within ``room`` characters, its first lines and how many more."""
    text = diff.diff.rstrip("\n")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    if room is not None:
        lines, kept, size = text.split("\n"), [], 0
        for line in lines:
            if size + len(line) + 1 > room - _DETAILS_FRAME:
                break
            kept.append(line)
            size += len(line) + 1
        text = "\n".join([*kept, f"... {len(lines) - len(kept)} more lines not shown"])
    return "\n".join(
        [
            f"<details><summary><code>{_html(diff.id)}</code>: {diff.change}</summary>",
            "",
            f"{fence}diff",
            text,
            fence,
            "</details>",
            "",
        ]
    )


def _cut(text: str, limit: int) -> str:
    """A summary too long on its own (thousands of apps): cut at a line, saying so."""
    note = f"\n> :scissors: Cut to fit {limit:,} characters: the summary goes on; no object diffs are shown.\n"
    kept = text[: max(0, limit - len(note))]
    return kept[: kept.rfind("\n") + 1] + note


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _inline(message: str) -> str:
    return " ".join(message.split())


def _html(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _waits(app: AppPlan) -> str:
    """``waits for promotion from staging (2 objects, then canary)``; no rollout named when none will run."""
    then = "" if app.pending_rollout is Rollout.NONE else f", then {app.pending_rollout}"
    return f"waits for promotion from {app.promotion_from} ({_objects(len(app.pending))}{then})"


def _objects(n: int) -> str:
    return f"{n} object" if n == 1 else f"{n} objects"


def text(plan: ChangePlan) -> str:
    """The plan for a terminal: one line per app-env, then its diffs, in full."""
    lines = [f"plan {plan.base[:_SHORT]}..{plan.head[:_SHORT]}"]
    for a in plan.apps:
        if a.error:
            lines.append(f"{a.key}: error: {a.error}")
            continue
        parts = [
            f"{a.count(Change.ADDED)} added, {a.count(Change.CHANGED)} changed, {a.count(Change.REMOVED)} removed",
            f"rollout {a.rollout}",
        ]
        parts += [f"image {b or '(none)'} -> {c or '(none)'}" for b, c in a.images]
        if a.waits_for_promotion:
            parts.append(_waits(a))
        if a.live is not None:
            parts.append(f"live: {_objects(len(a.live))} differ" if a.live else "live: in sync")
        if a.note:
            parts.append(a.note)
        lines.append(f"{a.key}: {'; '.join(parts)}")
        for _, diffs in _sections(a):
            lines += [d.diff.rstrip("\n") for d in diffs]
    if plan.unchanged:
        lines.append(f"unchanged: {', '.join(plan.unchanged)}")
    if not plan.apps:
        lines.append("no changes")
    return "\n".join(lines) + "\n"


def as_json(plan: ChangePlan) -> dict[str, Any]:
    """The plan for machines: every field, diffs included (Secret values masked as everywhere)."""

    def diffs(items: Sequence[ObjectDiff]) -> list[dict[str, str]]:
        return [{"id": d.id, "change": str(d.change), "diff": d.diff} for d in items]

    return {
        "base": plan.base,
        "head": plan.head,
        "hasChanges": plan.has_changes,
        "apps": [
            {
                "env": a.env,
                "app": a.app,
                "added": a.count(Change.ADDED),
                "changed": a.count(Change.CHANGED),
                "removed": a.count(Change.REMOVED),
                "images": [{"before": b, "after": c} for b, c in a.images],
                "rollout": str(a.rollout),
                "waitsForPromotion": a.waits_for_promotion,
                "promotionFrom": a.promotion_from,
                "pendingRollout": str(a.pending_rollout),
                "objects": diffs(a.objects),
                "pending": diffs(a.pending),
                "live": None if a.live is None else diffs(a.live),
                "note": a.note,
                "error": a.error,
            }
            for a in plan.apps
        ],
        "unchanged": list(plan.unchanged),
    }
