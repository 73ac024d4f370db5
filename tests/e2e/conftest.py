"""Fixtures for the agent-as-a-process tests; they and the helpers are in ``agentlab``."""

from agentlab import agents, core, prod_namespace, upstream

__all__ = ["agents", "core", "prod_namespace", "upstream"]
