"""gitsync: a GitOps continuous-delivery agent.

Layering (imports only go downwards): ``gitsync.model`` <- ``renderers`` <- stages
(``gitsync.plan``, ``gitsync.apply`` ...) <- ``gitsync.runtime`` / ``gitsync.cli``.
Adapters (``gitsync.adapters``) are the only modules that import kubernetes, git or HTTP clients.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gitsync")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
