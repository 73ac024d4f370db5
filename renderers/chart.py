"""``apps/<app>/``: the chart's metadata, default values, templates and helpers. Reads files, renders nothing.

An app is either a chart (``templates/``: Jinja, rendered) or plain manifests (``manifests/``: YAML taken as it
is, what upstream projects publish). Both folders are read with their subfolders, as Helm reads ``templates/``,
in sorted path order; files and folders whose names start with ``.`` are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from renderers.errors import RenderError
from renderers.sandbox import LIB_PREFIX
from renderers.values import check_inside, read_yaml_file, relative

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?\Z")
_RENDERED_SUFFIXES = (".yaml", ".yml", ".yaml.j2", ".yml.j2")
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
HELPER_SUFFIX = ".j2"


@dataclass(frozen=True, slots=True)
class Chart:
    """One app's chart. ``templates`` are rendered in path order; ``helpers`` maps an include prefix to a file."""

    app: str
    path: Path
    meta: Mapping[str, Any] = field(hash=False)
    """The whole of ``chart.yaml`` (``name``, ``version``, ``description``, anything else), seen as ``chart``."""
    templates: tuple[str, ...]
    """Paths relative to ``templates/`` (``deployment.yaml``, ``monitoring/rules.yaml``)."""
    helpers: Mapping[str, str] = field(hash=False)
    """``"helpers"`` -> ``"_helpers.j2"``, ``"common"`` -> ``"lib/_common.j2"``: ``include("common.labels")``."""
    manifests: tuple[str, ...] = ()
    """A plain-manifests app: paths relative to ``manifests/``, read as they are (no Jinja, no ``templates``)."""

    @property
    def templates_dir(self) -> Path:
        return self.path / "templates"

    @property
    def manifests_dir(self) -> Path:
        return self.path / "manifests"


def load_chart(repo: Path, app: str) -> Chart:
    """Read ``apps/<app>/chart.yaml`` and list its templates and helpers (the chart's and the shared ``lib/``),
    or its plain manifests (then ``chart.yaml`` is optional)."""
    path = repo / "apps" / app
    chart_file = path / "chart.yaml"
    rel = relative(repo, chart_file)
    if not _NAME.match(app):
        raise RenderError(rel, f"app name {app!r} is not a DNS label")
    templates_dir, manifests_dir = path / "templates", path / "manifests"
    check_inside(repo, templates_dir)
    check_inside(repo, manifests_dir)
    plain = manifests_dir.is_dir()
    if plain and templates_dir.is_dir():
        raise RenderError(
            relative(repo, path), "has both templates/ (Jinja) and manifests/ (plain YAML): an app uses one of them"
        )
    meta, lines = read_yaml_file(repo, chart_file, what="chart file", required=not plain)
    if meta is None and plain:
        meta = {"name": app}
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise RenderError(rel, "chart.yaml must be a mapping with a name", lines.get("name", 1))
    for key in ("version", "description"):
        meta.setdefault(key, "")
    if plain:
        manifests = tuple(n for n in list_files(manifests_dir) if n.endswith(_MANIFEST_SUFFIXES))
        for name in manifests:
            check_inside(repo, manifests_dir / name)
        return Chart(
            app=app, path=path, meta=MappingProxyType(meta), templates=(), helpers=_NO_HELPERS, manifests=manifests
        )
    if not templates_dir.is_dir():
        raise RenderError(
            relative(repo, path), "no templates/ folder (Jinja templates) or manifests/ folder (plain YAML)"
        )
    files = list_files(templates_dir)
    for name in files:
        check_inside(repo, templates_dir / name)
    templates = tuple(n for n in files if n.endswith(_RENDERED_SUFFIXES) and not _base(n).startswith("_"))
    helpers: dict[str, str] = {}
    sources = [(_base(n), n) for n in files if _base(n).startswith("_") and n.endswith(HELPER_SUFFIX)]
    lib = repo / "lib"
    check_inside(repo, lib)
    if lib.is_dir():
        shared = [p for p in sorted(lib.iterdir()) if p.is_file() and p.name.startswith("_")]
        for p in shared:
            check_inside(repo, p)
        sources += [(p.name, LIB_PREFIX + p.name) for p in shared if p.name.endswith(HELPER_SUFFIX)]
    for file_name, template_name in sources:
        prefix = file_name[1 : -len(HELPER_SUFFIX)]
        if prefix in helpers:
            raise RenderError(
                relative(repo, _helper_path(path, repo, template_name)),
                f"helper file {file_name} clashes with {helpers[prefix]}: include({prefix!r}.…) would be ambiguous",
            )
        helpers[prefix] = template_name
    return Chart(
        app=app,
        path=path,
        meta=MappingProxyType(meta),
        templates=templates,
        helpers=MappingProxyType(helpers),
    )


_NO_HELPERS: Mapping[str, str] = MappingProxyType({})


def list_files(root: Path) -> list[str]:
    """Every file under ``root`` as a sorted relative POSIX path; hidden names and symlinked folders are skipped."""
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(n for n in names if not n.startswith(".") and "/." not in n)


def _base(name: str) -> str:
    return name.rpartition("/")[2]


def _helper_path(chart: Path, repo: Path, template_name: str) -> Path:
    if template_name.startswith(LIB_PREFIX):
        return repo / template_name
    return chart / "templates" / template_name
