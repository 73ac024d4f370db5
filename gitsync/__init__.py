"""gitsync: a GitOps continuous-delivery agent.

Layering (imports only go downwards): ``gitsync.model`` <- ``renderers`` <- stages
(``gitsync.plan``, ``gitsync.apply`` ...) <- ``gitsync.runtime`` / ``gitsync.cli``.
Adapters (``gitsync.adapters``) are the only modules that import kubernetes, git or HTTP clients.
"""

__version__ = "0.1.0"  # the single source: pyproject reads it (hatch), so no importlib.metadata at start-up

__all__ = ["__version__"]
