"""Values layering: chart defaults, then promoted values (when the environment receives promotions), then the
environment's overrides, then ``--set``. Pure apart from reading files.

Maps merge key by key; anything else (lists included) replaces. An override of ``null`` removes the key, as in
Helm, so an environment can drop a default map entirely.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from renderers.errors import RenderError, UnreadableText, read_utf8
from renderers.yamlio import YamlError, load_values, load_values_with_lines

Values = dict[str, Any]


def read_yaml_file(
    repo: Path, path: Path, *, what: str, required: bool, nested: bool = False
) -> tuple[Any, dict[str, int]]:
    """One YAML document from a repository file and the line of each top-level key (of every key by dotted
    path with ``nested``: see ``yamlio.load_values_with_lines``).

    Errors read ``path:line: problem``; an absent optional file reads as ``None``.
    """
    rel = relative(repo, path)
    check_inside(repo, path)
    try:
        text = read_utf8(path)
    except FileNotFoundError:
        if required:
            raise RenderError(rel, f"{what} does not exist") from None
        return None, {}
    except UnreadableText as exc:
        raise RenderError(rel, f"{what}: {exc.problem}", exc.line) from None
    except OSError as exc:
        raise RenderError(rel, f"cannot read {what}: {exc}") from exc
    try:
        return load_values_with_lines(text, nested=nested)
    except YamlError as exc:
        raise RenderError(rel, f"invalid YAML: {exc.problem}", exc.line) from None


def read_values_file(repo: Path, path: Path) -> Values:
    """A values file as a mapping; a missing or empty file contributes nothing."""
    data, _ = read_yaml_file(repo, path, what="values file", required=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RenderError(relative(repo, path), "values must be a mapping at the top level", 1)
    return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Values:
    """A new mapping: ``override`` on top of ``base``; neither input is modified."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_KEY_PART = re.compile(r"(?:\\.|[^.\\])+")
_INDEX = re.compile(r"\[\d+\]$")
"""Helm's ``--set list[0]=x``; gitsync's ``--set`` has no list syntax."""


def split_path(path: str) -> tuple[str, ...]:
    """The keys of a dotted value path (``a.b`` is ``("a", "b")``; ``\\.`` escapes a dot inside a key, as in
    ``podAnnotations.prometheus\\.io/scrape``); empty when ``path`` is not one (empty, or an empty key)."""
    parts = _KEY_PART.findall(path)
    if not parts or ".".join(parts) != path:
        return ()
    return tuple(part.replace("\\.", ".") for part in parts)


def parse_set(assignment: str) -> Values:
    """``a.b=c`` as the nested mapping ``{"a": {"b": "c"}}``; the value reads as a YAML scalar like Helm's ``--set``.

    ``\\.`` escapes a dot inside a key (``podAnnotations.prometheus\\.io/scrape=true``); a quoted value
    (``tag='"1.10"'``) stays a string; ``null`` removes the key.
    """
    path, sep, raw = assignment.partition("=")
    keys = split_path(path)
    if not sep or not keys:
        raise RenderError("--set", f"expected key.path=value, got {assignment!r}")
    indexed = next((key for key in keys if _INDEX.search(key)), None)
    if indexed is not None:  # Helm's list index: taken as a key, it would add a value nothing reads
        raise RenderError(
            "--set", f"{path}: list indexes like {indexed!r} are not supported; set the whole list in a values file"
        )
    try:
        value = load_values(raw) if raw.strip() else ""
    except YamlError as exc:
        raise RenderError("--set", f"{path}: invalid value {raw!r}: {exc.problem}") from None
    if isinstance(value, (dict, list)):
        value = raw  # a --set value is a scalar; "{x}" or "[x]" are taken literally
    result: Values = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        result = {key: result}
    return result


def layer(layers: Sequence[Mapping[str, Any]], sets: Sequence[str]) -> Values:
    """The values a template sees: ``layers`` in precedence order (last wins), then ``--set``. The layers are
    the chart's values.yaml, the promoted values (in an environment that receives promotions) and the
    environment's override file."""
    merged: Values = dict(layers[0]) if layers else {}  # the chart's own nulls stay values, as before
    for values in layers[1:]:
        merged = deep_merge(merged, values)
    for assignment in sets:
        merged = deep_merge(merged, parse_set(assignment))
    return merged


def check_inside(repo: Path, path: Path) -> None:
    """A ``RenderError`` at the first symbolic link on the way from ``repo`` to ``path`` that leads out of the
    repository, or loops: a commit may not make the renderer read the agent's files.

    Checked before anything is opened, so a link to ``/dev/zero`` or a FIFO never blocks a render. Links that stay
    inside the repository are followed.
    """
    root = repo.resolve()
    current = repo
    for part in path.relative_to(repo).parts:
        current = current / part
        if not current.is_symlink():
            continue
        try:
            target = current.resolve()
        except (OSError, RuntimeError):  # a loop
            raise RenderError(relative(repo, current), "symbolic link that cannot be resolved (a loop?)") from None
        if not target.is_relative_to(root):
            raise RenderError(relative(repo, current), "symbolic link out of the repository (only its files are read)")


def relative(repo: Path, path: Path) -> str:
    """The repository-relative POSIX path used in every message."""
    try:
        return path.relative_to(repo).as_posix()
    except ValueError:
        return path.as_posix()
