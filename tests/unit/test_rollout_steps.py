"""One way of naming a rollout's step wherever a person reads it: ``step 2/3`` is the second of three steps (the one
running or waiting), in the rollout's own message (and so its commit status, Events and notifications),
``gitsync status``, ``gitsync rollout status`` and the dashboard; ``-o json`` keeps the 0-based index with the count."""

from __future__ import annotations

import pytest
from memstore import MemoryStore

from gitsync.cli.status import rollout_lines
from gitsync.dashboard.view import build_cell, build_live
from gitsync.history import Status
from gitsync.model import AppEnv
from gitsync.strategy.control import describe_rollout
from gitsync.strategy.decide import decide
from gitsync.strategy.executor import PART
from gitsync.strategy.model import Emit, Observation, WorkloadView
from gitsync.strategy.policy import parse_policy
from gitsync.strategy.state import Phase, RolloutState, step_label

NOW = 1000.0
KEY = AppEnv("web", "staging")
CANARY = parse_policy(
    {"rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]}}}
)


@pytest.mark.parametrize(
    ("phase", "step", "steps", "label"),
    [
        (Phase.PROGRESSING, 0, 3, "step 1/3"),
        (Phase.PAUSED, 1, 3, "step 2/3"),
        (Phase.PROMOTING, 3, 3, "all 3 steps done"),
        (Phase.ABORTED, 1, 3, "step 2/3"),
        (Phase.PROGRESSING, 1, 0, "step 2"),  # a state written before the count was kept
        (Phase.HEALTHY, 3, 3, ""),
        (Phase.IDLE, 0, 0, ""),
    ],
)
def test_a_step_is_named_from_one_counted_from_the_one_running(phase: Phase, step: int, steps: int, label: str) -> None:
    assert step_label(phase, step, steps) == label


def test_a_paused_canary_says_the_same_step_in_its_message_status_json_and_dashboard() -> None:
    """Paused at ``pause: {}``, the second of three steps: ``step 2/3`` everywhere, index 1 in JSON."""
    stable = WorkloadView(True, 3, 3, "old", "spec", True, False, True, 3)
    canary = WorkloadView(True, 1, 1, "new", "spec", True, False, True, 1)
    running = RolloutState(
        phase=Phase.PROGRESSING, stable_hash="old", target_hash="new", revision="rev", step=1, weight=25
    )
    observed = Observation(target_hash="new", spec_hash="spec", total=4, stable=stable, new=canary, revision="rev")
    decision = decide(running, observed, CANARY, NOW)
    assert decision.state.phase is Phase.PAUSED
    waits = (
        "paused: step 2/3 waits for gitsync rollout promote; "
        "run gitsync rollout promote to continue or gitsync rollout abort"
    )
    assert decision.state.message == waits
    events = [a.message for a in decision.actions if isinstance(a, Emit)]
    assert events == ["rev: step 2/3 waits for gitsync rollout promote"], "the Event (and notification)"

    store = MemoryStore()
    store.save(KEY, "ns", PART, {"state": {**decision.state.to_json(), "strategy": "canary"}}, "")
    described = describe_rollout(store, KEY, "ns")
    assert (described["step"], described["steps"]) == (1, 3)
    assert rollout_lines(described)[0] == f"rollout Paused, step 2/3, weight 25%: {waits}"
    assert build_cell(Status("web", "staging"), "ns", (), described).rollout == "canary Paused, step 2/3, 25%"
    live = build_live(KEY, described, CANARY, {}, {}, "repo")
    assert live.step == "step 2/3"
    assert [(s.number, s.state) for s in live.steps] == [(1, "done"), (2, "current"), (3, "todo")]


def test_a_settled_rollout_names_no_step() -> None:
    store = MemoryStore()
    healthy = RolloutState(phase=Phase.HEALTHY, step=3, steps=3, message="first deployment")
    store.save(KEY, "ns", PART, {"state": healthy.to_json()}, "")
    assert rollout_lines(describe_rollout(store, KEY, "ns")) == ["rollout Healthy, weight 0%: first deployment"]
