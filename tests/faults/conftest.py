"""The agent-as-a-process fixtures of ``tests/e2e/agentlab`` for the kill -9 cases."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from agentlab import agents, core, prod_namespace, upstream

__all__ = ["agents", "core", "prod_namespace", "upstream"]
