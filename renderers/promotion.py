"""``environments/<env>/promoted.yaml``: the revision each app of a receiving environment is pinned to.

An environment with ``promotion:`` in its env.yaml renders each app's chart as of the pinned commit, with the
promoted values layered under its own override file (``renderers.render``). The renderer only reads the file:
gitsync writes it (``gitsync.promoted_file.with_pin``, which keeps a person's comments), and a person may edit it
in a reviewed pull request, so reading it checks everything and every problem is a ``RenderError`` at
``file:line``. An absent file pins nothing. Format::

    # written by gitsync; change it only in a reviewed pull request
    podinfo:
      revision: 0123456789abcdef0123456789abcdef01234567
      from: staging
      values:          # the promoted value paths, nested as in values files
        image:
          tag: "6.7.0"

Pure apart from reading the file (and env.yaml, which says which apps and value paths a pin may name).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gitsync.model import canonical
from renderers.environment import Environment, load_environment
from renderers.errors import RenderError
from renderers.values import Values, read_yaml_file, relative, split_path

_REVISION = re.compile(r"[0-9a-f]{40}\Z")
_ENTRY_KEYS = ("revision", "from", "values", "override")


@dataclass(frozen=True, slots=True)
class Pin:
    """One app's entry: render its chart as of ``revision`` with ``values`` on top of the chart's defaults."""

    app: str
    revision: str
    """The 40-hex commit whose ``apps/<app>/`` (and ``lib/``) the receiving environment renders."""
    from_env: str
    """The environment the release was promoted from (evidence; the guard checks that environment's notes)."""
    values: Mapping[str, Any] = field(hash=False)
    """The promoted value paths, nested as in a values file (``{"image": {"tag": "6.7.0"}}``)."""
    override: str = ""
    """Why this pin was forced without upstream evidence (``gitsync promote --force --reason``): the guard applies
    it anyway, and the reason stays in the file, the commit's ``Gitsync-Override`` trailer and the ledger."""


def pins_file(repo: Path, env: str) -> Path:
    return repo / "environments" / env / "promoted.yaml"


def load_pins(repo: Path, env: str) -> Mapping[str, Pin]:
    """The pins of ``env`` by app (file order); empty when ``promoted.yaml`` does not exist.

    Checks that each revision is a full commit id and that the values hold only the paths env.yaml's
    ``promotion.values`` lists. The pin of an app env.yaml no longer lists is left out unread: removing an app
    from ``apps`` is the intent, and its pin (written by gitsync) must not stop the environment's other apps.
    """
    return read_pins(repo, load_environment(repo, env))


def read_pins(repo: Path, environment: Environment) -> Mapping[str, Pin]:
    """``load_pins`` for an environment already loaded (the renderer has it)."""
    path = pins_file(repo, environment.name)
    rel = relative(repo, path)
    data, lines = read_yaml_file(repo, path, what="promoted.yaml", required=False, nested=True)
    if data is None:
        return MappingProxyType({})

    def fail(key: str, problem: str) -> RenderError:
        while key and key not in lines:
            key = key.rpartition(".")[0]
        return RenderError(rel, problem, lines.get(key, 1))

    if not isinstance(data, dict):
        raise fail("", "promoted.yaml must map each app to its pin (revision, from, values)")
    declared = environment.promotion.values if environment.promotion else ()
    pins: dict[str, Pin] = {}
    for app, entry in data.items():
        name = str(app)
        if name not in environment.apps:
            continue  # an app removed from env.yaml: its pin pins nothing (removal.py prunes the app)
        if not isinstance(entry, dict):
            raise fail(name, f"{name}: expected a mapping with revision, from and values")
        for key in entry:
            if key not in _ENTRY_KEYS:
                raise fail(f"{name}.{key}", f"{name}: unknown key {key!r} (known: {', '.join(_ENTRY_KEYS)})")
        revision = entry.get("revision")
        if not isinstance(revision, str) or not _REVISION.match(revision):
            raise fail(f"{name}.revision", f"{name}.revision must be a full 40-hex commit id, got {revision!r}")
        source = entry.get("from")
        if not isinstance(source, str) or not source or source == environment.name:
            raise fail(f"{name}.from", f"{name}.from must name the environment it was promoted from, got {source!r}")
        values = entry.get("values") or {}
        if not isinstance(values, dict):
            raise fail(f"{name}.values", f"{name}.values must be a mapping (the promoted values, nested)")
        stray = _undeclared(values, declared)
        if stray:
            listed = ", ".join(declared) or "none"
            raise fail(
                f"{name}.values.{stray}",
                f"{name}.values.{stray} is not a promoted value path (env.yaml promotion.values: {listed})",
            )
        override = entry.get("override", "")
        if not isinstance(override, str):
            raise fail(f"{name}.override", f"{name}.override must be the reason the pin was forced, as text")
        pins[name] = Pin(name, revision, source, MappingProxyType(values), override)
    return MappingProxyType(pins)


def _undeclared(values: Mapping[str, Any], declared: Sequence[str], prefix: tuple[str, ...] = ()) -> str:
    """The dotted path of the first value not under a declared path, or ``""``."""
    paths = {split_path(p) for p in declared}
    for key, value in values.items():
        here = (*prefix, str(key))
        if here in paths:
            continue
        if not isinstance(value, Mapping) or not any(p[: len(here)] == here for p in paths):
            return ".".join(here)
        inner = _undeclared(value, declared, here)
        if inner:
            return inner
    return ""


PathError = Callable[[int, str], RenderError]
"""Makes the error of the ``index``-th listed promotion path (``env_yaml_errors`` places it at its env.yaml line)."""


def promoted_values(values: Mapping[str, Any], paths: Sequence[str], fail: PathError | None = None) -> Values:
    """The subset of ``values`` at ``paths``, nested as in a values file: what a pin records. Pure.

    ``promotion.values`` is one list for every app of the environment, and each app carries what it has: a path
    an app's values do not set (a plain-manifests app sets none) is not carried for that app, as there is
    nothing to promote there. A path that runs into a value that is not a mapping (``image.tag`` where ``image``
    is a string) is a mistake to fix: a ``RenderError`` from ``fail(index of the path, problem)`` (by default
    one naming only ``promotion.values``).
    """
    result: Values = {}
    for index, path in enumerate(paths):
        keys = split_path(path)
        node: Any = values
        for depth, key in enumerate(keys):
            if not isinstance(node, Mapping):
                parent = ".".join(keys[:depth])
                problem = f"{path}: {parent} is {_kind(node)} in the values it is promoted from, not a mapping"
                raise (fail or _unplaced)(index, problem)
            if key not in node:
                break
            node = node[key]
        else:
            target = result
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = node
    return result


def _unplaced(index: int, problem: str) -> RenderError:
    return RenderError("promotion.values", problem)


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return f"the string {node!r}"
    if isinstance(node, list):
        return "a list"
    return f"{node!r}"


def env_yaml_errors(repo: Path, env: str) -> PathError:
    """``fail`` for ``promoted_values`` with ``env``'s own ``promotion.values``: the error reads
    ``environments/<env>/env.yaml:<line>: promotion.values: ...`` at the listed path's line (env.yaml is read only
    when there is an error)."""

    def fail(index: int, problem: str) -> RenderError:
        path = repo / "environments" / env / "env.yaml"
        try:
            _, lines = read_yaml_file(repo, path, what="env.yaml", required=False, nested=True)
        except RenderError:
            lines = {}
        line = lines.get(f"promotion.values.{index}") or lines.get("promotion.values") or lines.get("promotion")
        return RenderError(relative(repo, path), f"promotion.values: {problem}", line)

    return fail


def values_hash(values: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``values``: the promoted values' identity in evidence. Pure.
    Any mapping will do (a ``Pin``'s values are read-only); equal values hash equal whatever their type."""
    return "sha256:" + hashlib.sha256(canonical(_plain(values)).encode()).hexdigest()


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in values.items()}
