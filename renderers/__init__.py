"""The Helm-like renderer: Jinja charts plus per-environment values in, ordered manifests and a digest out.

Pure and deterministic (no cluster, network, clock or environment variables). See docs/repository-format.md
for the repository layout, the template vocabulary and the error messages.
"""

from __future__ import annotations

from renderers.environment import Environment, load_environment
from renderers.errors import AwaitingPromotion, RenderError
from renderers.render import RenderedApp, render_app, render_env

__all__ = [
    "AwaitingPromotion",
    "Environment",
    "RenderError",
    "RenderedApp",
    "load_environment",
    "render_app",
    "render_env",
]
