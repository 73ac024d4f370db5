"""Promotion decisions and the commit messages that carry them.

Contract: pure, no I/O (the ledger entries, the current pin and "now" are handed in). ``candidate`` picks what a
receiving environment should pin next, ``verify_pin`` is the guard a pinned environment applies before rendering
a pin, and ``promotion_message``/``rollback_message`` build the commits that ``ports.GitWriter`` writes. Trailers
follow ``git interpret-trailers`` (the last paragraph, ``Key: value`` lines, one line each), and the
``*_identity`` pairs are what ``GitWriter`` searches for, so one candidate is written once.

A commit's body says what it changes in the receiving environment's render: ``rendered_change`` compares two
renders (pure); ``pin_change`` makes them, rendering the app from a snapshot with its current pin and with the
new one, and like the render stage reads nothing but the snapshot and the pinned trees it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitsync.ledger import NO_LIB, LedgerEntry, ReleaseContent, ReleaseOutcome, Seal
from gitsync.model import Manifest, ObjectId, apply_order
from renderers import AwaitingPromotion, RenderError, render_app
from renderers.promotion import Pin, values_hash
from renderers.render import Trees

__all__ = [
    "Blocked",
    "Candidate",
    "PinnedRelease",
    "RenderedChange",
    "Verified",
    "candidate",
    "evidence",
    "pin_change",
    "pinned_release",
    "promotion_identity",
    "promotion_message",
    "rendered_change",
    "rollback_identity",
    "rollback_message",
    "soak_left",
    "soak_start",
    "trusted",
    "verify_pin",
]

PROMOTED_FROM = "Gitsync-Promoted-From"
APP = "Gitsync-App"
ENV = "Gitsync-Env"
DIGEST = "Gitsync-Digest"
EVIDENCE = "Gitsync-Evidence"
OVERRIDE = "Gitsync-Override"
ROLLBACK_OF = "Gitsync-Rollback-Of"


@dataclass(frozen=True, slots=True)
class PinnedRelease:
    """What a receiving environment runs for one app: the pinned commit, the Git tree ids of ``apps/<app>`` and
    of ``lib/`` there (``ledger.NO_LIB`` without one) and the hash of the promoted values
    (``renderers.promotion.values_hash``)."""

    revision: str
    chart_tree: str
    values_hash: str
    lib_tree: str = ""

    @property
    def content(self) -> ReleaseContent:
        return ReleaseContent(self.chart_tree, self.lib_tree, self.values_hash)


def pinned_release(
    tree_id: Callable[[str, str], str], app: str, revision: str, values: Mapping[str, Any]
) -> PinnedRelease:
    """What ``app`` at ``revision`` with promoted ``values`` renders from, as the ledger notes and the guard
    compares it: the ids ``tree_id(sha, path)`` gives ("" when absent) of ``apps/<app>`` and ``lib/`` there, and
    the values' hash. The ledger line of a release, the guard and the promote stage all take a release's content
    from here, with ``values`` from ``renderers.promotion.promoted_values``, so a pin the agent writes is one its
    guard can verify."""
    chart, lib = tree_id(revision, f"apps/{app}"), tree_id(revision, "lib")
    return PinnedRelease(revision, chart, values_hash(values), lib or NO_LIB)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A release of ``entry.app`` in ``entry.env`` that may be pinned downstream: it succeeded at ``revision``
    and nothing of the app changed there for ``soak_seconds`` since ``soak_started_at``."""

    revision: str
    entry: LedgerEntry
    soak_started_at: float
    soak_seconds: float

    @property
    def source(self) -> str:
        """``staging@<sha>``: the ``Gitsync-Promoted-From`` value."""
        return f"{self.entry.env}@{self.revision}"


@dataclass(frozen=True, slots=True)
class Verified:
    """The pin may be applied: ``evidence`` is the upstream release that verifies it (None when ``override``)."""

    evidence: tuple[str, LedgerEntry] | None
    override: str = ""


@dataclass(frozen=True, slots=True)
class Blocked:
    """Nothing of the pin may be applied; ``reason`` is one line for status and the Event."""

    reason: str


@dataclass(frozen=True, slots=True)
class RenderedChange:
    """What a commit changes in the receiving environment's render, for its body (object ids as strings)."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    images: tuple[tuple[str, str], ...] = ()
    """(before, after) per changed container image."""
    values: tuple[tuple[str, str, str], ...] = ()
    """(dotted path, before, after) per changed promoted value."""


def rendered_change(
    before: Sequence[Manifest],
    after: Sequence[Manifest],
    values_before: Mapping[str, Any] | None = None,
    values_after: Mapping[str, Any] | None = None,
) -> RenderedChange:
    """What going from the render ``before`` to ``after`` changes, for a commit body. Pure.

    Objects are matched by ``ObjectId`` and compared by content (``Manifest.fingerprint``); only their ids are
    reported, never a rendered value, so no Secret's content can reach a commit. Images are those of each
    container and init container of a pod template (``spec.template``, a CronJob's job template, a Pod's own
    spec), one (before, after) pair per distinct change, "" for none. ``values_before``/``values_after`` are
    the promoted values of the two pins (nested as in ``promoted.yaml``); each changed path is listed."""
    old = {m.id: m.fingerprint for m in before}
    new = {m.id: m.fingerprint for m in after}

    def ids(selected: set[ObjectId]) -> tuple[str, ...]:
        return tuple(str(i) for i in sorted(selected, key=apply_order))

    old_images, new_images = _images(before), _images(after)
    images = {
        (old_images.get(key, ""), new_images.get(key, ""))
        for key in old_images.keys() | new_images.keys()
        if old_images.get(key) != new_images.get(key)
    }
    old_values, new_values = _flatten(values_before or {}), _flatten(values_after or {})
    return RenderedChange(
        added=ids(new.keys() - old.keys()),
        changed=ids({i for i in old.keys() & new.keys() if old[i] != new[i]}),
        removed=ids(old.keys() - new.keys()),
        images=tuple(sorted(images)),
        values=tuple(
            (path, old_values.get(path, ""), new_values.get(path, ""))
            for path in sorted(old_values.keys() | new_values.keys())
            if old_values.get(path) != new_values.get(path)
        ),
    )


def pin_change(repo: Path, env: str, app: str, pin: Pin, trees: Trees) -> RenderedChange:
    """What pinning ``app`` in ``env`` to ``pin`` changes: the app rendered from the snapshot ``repo`` with the
    pin its ``promoted.yaml`` holds (nothing when it awaits promotion) and with ``pin`` (``trees`` as for
    ``renderers.render_app``).

    A ``RenderError`` of the new pin's render is raised: a pin that does not render in ``env`` is not worth
    writing. When the current pin does not render, what the environment runs is not known from the snapshot,
    and the change is empty (the body then says nothing about it)."""
    after = render_app(repo, env, app, trees=trees, pin=pin)
    try:
        current = render_app(repo, env, app, trees=trees)
    except AwaitingPromotion:
        return rendered_change((), after.manifests, {}, pin.values)
    except RenderError:
        return RenderedChange()
    values = current.pin.values if current.pin is not None else {}
    return rendered_change(current.manifests, after.manifests, values, pin.values)


def trusted(
    releases: Iterable[tuple[str, LedgerEntry]], seal: Callable[[LedgerEntry], Seal] | None
) -> list[tuple[str, LedgerEntry]]:
    """The ledger lines that count for candidates, the soak, the guard and rollbacks: all of them when no
    signatures are checked (``seal`` None: no allowed signers configured), else only the lines ``seal`` finds
    ``VERIFIED``; an unsigned or badly signed line counts as absent. The agent (``Promotions``) and ``gitsync
    promote``/``rollback`` read the ledger through this one rule. ``seal`` may raise (the allowed signers file
    cannot be used: ``ledger.SignersError``)."""
    return [(sha, entry) for sha, entry in releases if seal is None or seal(entry) is Seal.VERIFIED]


def _same_release(a: LedgerEntry, b: LedgerEntry) -> bool:
    return a.digest == b.digest and a.content.same_as(b.content)


def soak_start(upstream: Sequence[tuple[str, LedgerEntry]]) -> tuple[str, LedgerEntry, float] | None:
    """The newest upstream release when it Succeeded, as (noted commit, entry, when its soak started); None when
    the newest did not succeed (a later failed, rolled-back or superseded release means the app changed since, so
    nothing before it is promoted). The soak starts at the first success of that content: newer successful
    releases of the same content and digest (commits that did not touch the app or ``lib/``) do not restart it.
    The one rule ``candidate`` and ``soak_left`` both count from, so the countdown a person reads ends when the
    candidate appears."""
    if not upstream:
        return None
    releases = sorted(upstream, key=lambda pair: pair[1].recency, reverse=True)
    revision, newest = releases[0]
    if newest.outcome is not ReleaseOutcome.SUCCEEDED:
        return None
    started = newest.finished_at
    for _, older in releases[1:]:
        if older.outcome is not ReleaseOutcome.SUCCEEDED or not _same_release(older, newest):
            break
        started = older.finished_at
    return revision, newest, started


def candidate(
    upstream: Sequence[tuple[str, LedgerEntry]], pin: PinnedRelease | None, soak_seconds: float, now: float
) -> Candidate | None:
    """The release to promote next, or None. ``upstream`` holds the upstream environment's releases of the app
    as (noted commit, entry), in any order (``LedgerEntry.recency`` orders them, so the order does not matter).

    The newest release must have Succeeded and soaked ``soak_seconds`` (``soak_start``), and its content (chart
    tree, ``lib/`` tree, promoted values: ``ReleaseContent``) must differ from ``pin``'s."""
    found = soak_start(upstream)
    if found is None:
        return None
    revision, newest, started = found
    if started + soak_seconds > now:
        return None
    if pin is not None and pin.content.same_as(newest.content):
        return None
    return Candidate(revision, newest, started, soak_seconds)


def soak_left(
    upstream: Sequence[tuple[str, LedgerEntry]], pin: PinnedRelease | None, soak_seconds: float, now: float
) -> float | None:
    """When ``candidate`` offers nothing: the seconds the newest upstream release still soaks (from
    ``soak_start``, as ``candidate`` counts), when it Succeeded with content ``pin`` lacks; None when nothing
    soaks (it did not succeed, or the pin holds it). The agent's ``soaking`` step and ``gitsync promote``'s answer
    both say it."""
    found = soak_start(upstream)
    if found is None:
        return None
    _, newest, started = found
    if pin is not None and pin.content.same_as(newest.content):
        return None
    return max(started + soak_seconds - now, 0.0)


def verify_pin(
    pin: PinnedRelease, upstream: Sequence[tuple[str, LedgerEntry]], *, override: str = ""
) -> Verified | Blocked:
    """The guard: a pin is verified by an upstream release that Succeeded with the same content (chart and
    ``lib/`` trees, promoted values; the newest such release is the evidence), or by the ``Gitsync-Override``
    reason recorded with it."""
    matches = [
        (sha, entry)
        for sha, entry in upstream
        if entry.outcome is ReleaseOutcome.SUCCEEDED and entry.content.same_as(pin.content)
    ]
    if matches:
        return Verified(max(matches, key=lambda pair: pair[1].recency))
    if override:
        return Verified(None, override=override)
    envs = sorted({entry.env for _, entry in upstream})
    where = f"in {', '.join(envs)}" if envs else "upstream (no release recorded)"
    return Blocked(
        f"pin {pin.revision[:12]} is not verified: no Succeeded release {where} has chart tree "
        f"{pin.chart_tree[:12]}{_lib(pin.lib_tree)} with values {pin.values_hash.removeprefix('sha256:')[:12]}"
    )


def _lib(lib_tree: str) -> str:
    return f", lib/ {lib_tree[:12]}" if lib_tree and lib_tree != NO_LIB else ""


def evidence(entry: LedgerEntry, soak_seconds: float | None = None) -> str:
    """The one-line ``Gitsync-Evidence``: outcome (with why it was aborted), each analysis value against its
    condition, the soak."""
    parts = [f"{entry.outcome.value}: {entry.reason}" if entry.reason else entry.outcome.value]
    for check in entry.analysis:
        if check.value is None and not check.condition:  # a check judged without a number (podHealth)
            parts.append(f"{check.name} {check.verdict}")
            continue
        value = "no data" if check.value is None else f"{check.value:g}"
        parts.append(f"{check.name}={value} ({check.condition}) {check.verdict}")
    if soak_seconds is not None:
        parts.append(f"soak {_duration(soak_seconds)}")
    return _one_line("; ".join(parts))


def promotion_identity(app: str, to_env: str, source: str) -> tuple[tuple[str, str], ...]:
    """The trailers that make a promotion of ``source`` (``staging@<sha>``) into ``to_env`` the same write."""
    return ((PROMOTED_FROM, source), (APP, app), (ENV, to_env))


def promotion_message(
    app: str, to_env: str, source: str, change: RenderedChange, *, digest: str, evidence: str, override: str = ""
) -> str:
    """``promote podinfo to prod (staging@abc1234)``, a body saying what changes in ``to_env``, and trailers.
    ``digest`` is the promoted release's render digest upstream; ``evidence`` is ``evidence(entry, soak)``."""
    env, _, revision = source.partition("@")
    subject = f"promote {app} to {to_env} ({env}@{revision[:7]})"
    verified = "forced without verification" if override else "verified there"
    body = [f"Pins {app} in {to_env} to {env}@{revision[:12]} ({verified}).", _change(to_env, change)]
    trailers = [*promotion_identity(app, to_env, source), (DIGEST, digest), (EVIDENCE, evidence)]
    if override:
        trailers.append((OVERRIDE, override))
    return _message(subject, body, trailers)


def rollback_identity(app: str, env: str, rollback_of: str) -> tuple[tuple[str, str], ...]:
    return ((ROLLBACK_OF, rollback_of), (APP, app), (ENV, env))


def rollback_message(
    app: str,
    env: str,
    *,
    rollback_of: str,
    restored: str,
    change: RenderedChange,
    failed: LedgerEntry | None,
    override: str = "",
) -> str:
    """``roll back podinfo in prod to abc1234``: undoes ``rollback_of`` (a promotion commit, or the failed
    release's commit) by restoring what ``restored`` held; the evidence is the failed release's, when known.
    ``override``: the restored pin was forced (its reason, kept in the pin), so the commit says so as the forced
    promotion did, and the audit shows what runs after it as forced."""
    subject = f"roll back {app} in {env} to {restored[:7]}"
    body = [f"Restores {app} in {env} as of {restored[:12]}, undoing {rollback_of[:12]}.", _change(env, change)]
    trailers = list(rollback_identity(app, env, rollback_of))
    if failed is not None:
        trailers.append((EVIDENCE, evidence(failed)))
    if override:
        trailers.append((OVERRIDE, override))
    return _message(subject, body, trailers)


def _change(env: str, change: RenderedChange) -> str:
    """The body paragraph on the rendered change ("" when none was given)."""
    lines = []
    for label, ids in (("added", change.added), ("changed", change.changed), ("removed", change.removed)):
        if ids:
            lines.append(f"  {label}: {', '.join(ids)}")
    lines += [f"  image: {before or '(none)'} -> {after or '(none)'}" for before, after in change.images]
    lines += [f"  {path}: {before or '(none)'} -> {after or '(none)'}" for path, before, after in change.values]
    return "\n".join([f"Rendered change in {env}:", *lines]) if lines else ""


def _message(subject: str, body: Sequence[str], trailers: Sequence[tuple[str, str]]) -> str:
    trailer_lines = "\n".join(f"{key}: {_one_line(value)}" for key, value in trailers if value)
    return "\n\n".join([_one_line(subject), *(p for p in body if p), trailer_lines]) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole and whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def _images(manifests: Sequence[Manifest]) -> dict[tuple[ObjectId, str], str]:
    """(object, ``containers/<name>`` or ``initContainers/<name>``) -> image, for every pod template."""
    found = {}
    for manifest in manifests:
        for container, image in _containers(manifest.body):
            found[(manifest.id, container)] = image
    return found


def _containers(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if body.get("kind") == "Pod":
        spec = body.get("spec")
    else:
        spec = _dig(body, "spec", "jobTemplate", "spec", "template", "spec") or _dig(body, "spec", "template", "spec")
    if not isinstance(spec, Mapping):
        return
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            if isinstance(container, Mapping) and isinstance(container.get("image"), str):
                yield f"{key}/{container.get('name', '')}", container["image"]


def _dig(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted path -> the value as text (strings as they are, anything else as JSON), one per leaf."""
    out = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out
