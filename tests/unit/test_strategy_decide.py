"""The rollout step function, row by row: every phase and transition of canary and blue-green."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gitsync.analysis.pod_health import PodReport
from gitsync.analysis.run import CheckOutcome, CheckRun, CheckVerdict, Measurement
from gitsync.strategy.checks import checks_due
from gitsync.strategy.decide import decide
from gitsync.strategy.handover import retire
from gitsync.strategy.model import (
    Clone,
    Decision,
    Deploy,
    Emit,
    Fold,
    FoldStage,
    Observation,
    Remove,
    Route,
    Scale,
    ServiceRole,
    Track,
    WorkloadView,
)
from gitsync.strategy.policy import RolloutPolicy, parse_policy
from gitsync.strategy.state import Command, CommandName, Phase, RolloutState

NOW = 1000.0
OLD, NEW, NEWER = "old", "new", "newer"

CANARY = parse_policy(
    {
        "rollout": {
            "strategy": "canary",
            "analysis": {
                "prometheus": {"address": "http://prom"},
                "checks": [
                    {
                        "name": "errors",
                        "type": "prometheus",
                        "query": "q",
                        "interval": "2s",
                        "count": 2,
                        "successCondition": "result[0] < 0.05",
                    },
                    {
                        "name": "bg",
                        "type": "prometheus",
                        "query": "q",
                        "interval": "1s",
                        "count": 0,
                        "failureCondition": "result[0] > 0.5",
                    },
                ],
            },
            "canary": {
                "steps": [
                    {"setWeight": 25},
                    {"pause": {"duration": "10s"}},
                    {"analysis": {"checks": ["errors"]}},
                    {"pause": {}},
                    {"setWeight": 50},
                ]
            },
        }
    }
)
CANARY_BG = replace(
    CANARY,
    canary=replace(
        CANARY.canary,
        background=parse_policy(
            {
                "rollout": {
                    "strategy": "canary",
                    "analysis": {
                        "prometheus": {"address": "http://p"},
                        "checks": [
                            {
                                "name": "bg",
                                "type": "prometheus",
                                "query": "q",
                                "interval": "1s",
                                "count": 0,
                                "failureCondition": "result[0] > 0.5",
                            }
                        ],
                    },
                    "canary": {"analysis": {"checks": ["bg"]}},
                }
            }
        ).canary.background,
    ),
)
BLUE_GREEN = parse_policy(
    {
        "rollout": {
            "strategy": "blueGreen",
            "analysis": {"checks": [{"name": "smoke", "type": "http", "url": "http://x", "count": 1}]},
            "blueGreen": {
                "activeService": "web",
                "previewService": "web-preview",
                "scaleDownDelaySeconds": 5,
                "prePromotionAnalysis": {"checks": ["smoke"]},
                "postPromotionAnalysis": {"checks": ["smoke"]},
            },
        }
    }
)
MANUAL_BG = replace(BLUE_GREEN, blue_green=replace(BLUE_GREEN.blue_green, auto_promotion=False))  # type: ignore[arg-type]


def w(
    replicas: int = 4,
    ready: int | None = None,
    hash_: str = OLD,
    rolled: bool = True,
    *,
    paused: bool = False,
    pods: int | None = None,
) -> WorkloadView:
    ready = replicas if ready is None else ready
    pods = replicas if pods is None else pods
    return WorkloadView(True, replicas, ready, hash_, "spec", rolled and ready >= replicas, paused, True, pods)


NONE = WorkloadView()
FULL = w()
NO_PODS = PodReport()


def obs(
    stable: WorkloadView = FULL,
    new: WorkloadView = NONE,
    target: str = NEW,
    pods: PodReport = NO_PODS,
    measurements: tuple[Measurement, ...] = (),
    command: CommandName | None = None,
    workload: str = "web",
) -> Observation:
    return Observation(
        target_hash=target,
        spec_hash="spec",
        total=4,
        stable=stable,
        new=new,
        new_pods=pods,
        measurements=measurements,
        command=Command(command, NOW, "alice") if command else None,
        revision=f"rev-{target}",
        workload=workload,
    )


def running(step: int, phase: Phase = Phase.PROGRESSING, **kw: object) -> RolloutState:
    base = RolloutState(
        phase=phase,
        stable_hash=OLD,
        target_hash=NEW,
        revision="rev-new",
        step=step,
        step_started_at=NOW - 1,
        started_at=NOW - 20,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def kinds(d: Decision) -> list[object]:
    return [a for a in d.actions if not isinstance(a, Emit)]


def reasons(d: Decision) -> list[str]:
    return [a.reason for a in d.actions if isinstance(a, Emit)]


HEALTHY = RolloutState(phase=Phase.HEALTHY, stable_hash=OLD, target_hash=OLD)
FAILING = PodReport(1, 0, ("Pod/ns/web-canary-x: container app: CrashLoopBackOff (restarts 3)",))


def m(check: str, outcome: CheckOutcome, value: object = None) -> Measurement:
    return Measurement(check, outcome, NOW, value, "")


CANARY_ROWS = [
    # (id, state, observation, phase, step, actions, requeue)
    (
        "first deploy goes straight to stable",
        RolloutState(),
        obs(stable=NONE),
        Phase.HEALTHY,
        0,
        [Deploy(Track.STABLE, 4)],
        None,
    ),
    ("nothing changed stays healthy", HEALTHY, obs(target=OLD), Phase.HEALTHY, 0, [], None),
    (
        "replicas changed in git: re-apply, no rollout",
        HEALTHY,
        obs(stable=w(replicas=3), target=OLD),
        Phase.HEALTHY,
        0,
        [Deploy(Track.STABLE, 4)],
        None,
    ),
    ("adopt a stable already on the template", RolloutState(), obs(target=OLD), Phase.HEALTHY, 0, [], None),
    ("new template starts at step 0", HEALTHY, obs(), Phase.PROGRESSING, 0, [Deploy(Track.CANARY, 1)], 1.0),
    ("setWeight: canary first", running(0), obs(), Phase.PROGRESSING, 0, [Deploy(Track.CANARY, 1)], 1.0),
    ("setWeight: wait for canary Ready", running(0), obs(new=w(1, 0, NEW)), Phase.PROGRESSING, 0, [], 1.0),
    (
        "setWeight: then shrink stable, and the pause starts",
        running(0),
        obs(new=w(1, 1, NEW)),
        Phase.PROGRESSING,
        1,
        [Scale(Track.STABLE, 3)],
        5.0,
    ),
    (
        "setWeight done, timed pause starts",
        running(0),
        obs(stable=w(3), new=w(1, 1, NEW)),
        Phase.PROGRESSING,
        1,
        [],
        5.0,
    ),
    (
        "timed pause still running",
        running(1, step_started_at=NOW - 4),
        obs(stable=w(3), new=w(1, 1, NEW)),
        Phase.PROGRESSING,
        1,
        [],
        5.0,
    ),
    (
        "timed pause over: analysis starts",
        running(1, step_started_at=NOW - 10),
        obs(stable=w(3), new=w(1, 1, NEW)),
        Phase.PROGRESSING,
        2,
        [],
        0.0,
    ),
    (
        "crash-looping canary aborts at once",
        running(0),
        obs(new=w(1, 0, NEW), pods=FAILING),
        Phase.ABORTED,
        0,
        [Scale(Track.CANARY, 0)],
        1.0,
    ),
    (
        "abort after stable shrank restores it",
        running(1),
        obs(stable=w(3), new=w(1, 1, NEW), pods=FAILING),
        Phase.ABORTED,
        1,
        [Scale(Track.STABLE, 4), Scale(Track.CANARY, 0)],
        1.0,
    ),
    ("indefinite pause waits for a human", running(3), obs(stable=w(3), new=w(1, 1, NEW)), Phase.PAUSED, 3, [], 5.0),
    (
        "promote passes the indefinite pause",
        running(3, Phase.PAUSED),
        obs(stable=w(3), new=w(1, 1, NEW), command=CommandName.PROMOTE),
        Phase.PROGRESSING,
        4,
        [Deploy(Track.CANARY, 2)],
        1.0,
    ),
    (
        "abort command rolls back, the stable first",
        running(3, Phase.PAUSED),
        obs(stable=w(3), new=w(1, 1, NEW), command=CommandName.ABORT),
        Phase.ABORTED,
        3,
        [Scale(Track.STABLE, 4)],
        1.0,
    ),
    (
        "... then the canary, once the stable is Ready",
        replace(running(3), phase=Phase.ABORTED, failed_hash=NEW),
        obs(stable=w(4), new=w(1, 1, NEW)),
        Phase.ABORTED,
        3,
        [Scale(Track.CANARY, 0)],
        1.0,
    ),
    (
        "failing pods take the canary out at once",
        running(1),
        obs(stable=w(3), new=w(1, 1, NEW), pods=FAILING),
        Phase.ABORTED,
        1,
        [Scale(Track.STABLE, 4), Scale(Track.CANARY, 0)],
        1.0,
    ),
    (
        "promote --full skips to the canary at 100%",
        running(1),
        obs(stable=w(3), new=w(1, 1, NEW), command=CommandName.PROMOTE_FULL),
        Phase.PROGRESSING,
        5,
        [],
        0.0,
    ),
    (
        "last step done: the canary goes to 100%",
        running(4),
        obs(stable=w(2), new=w(2, 2, NEW)),
        Phase.PROGRESSING,
        5,
        [Deploy(Track.CANARY, 4)],
        1.0,
    ),
    (
        "canary Ready at 100%: the stable empties, paused, and promotion starts",
        running(5),
        obs(stable=w(2), new=w(4, 4, NEW)),
        Phase.PROMOTING,
        5,
        [Scale(Track.STABLE, 0, pause=True)],
        1.0,
    ),
    (
        "promoting waits for the stable's controller to see it paused",
        running(5, Phase.PROMOTING),
        obs(stable=replace(w(0, 0, paused=True, pods=1), observed=False), new=w(4, 4, NEW)),
        Phase.PROMOTING,
        5,
        [],
        1.0,
    ),
    (
        "the empty, paused stable takes the canary's template",
        running(5, Phase.PROMOTING),
        obs(stable=w(0, 0, paused=True), new=w(4, 4, NEW)),
        Phase.PROMOTING,
        5,
        [Fold(FoldStage.HOLD, 4)],
        1.0,
    ),
    (
        "then adopts the canary's ReplicaSet",
        running(5, Phase.PROMOTING),
        obs(stable=w(4, 0, NEW, paused=True, pods=0), new=w(4, 4, NEW)),
        Phase.PROMOTING,
        5,
        [Fold(FoldStage.ADOPT, 4)],
        1.0,
    ),
    (
        "and waits for its controller to count the pods as its own",
        running(5, Phase.PROMOTING),
        obs(stable=w(4, 0, NEW, paused=True, pods=0), new=w(4, 4, NEW, pods=0)),
        Phase.PROMOTING,
        5,
        [],
        1.0,
    ),
    (
        "promoted: the stable resumes, the canary goes, healthy",
        running(5, Phase.PROMOTING),
        obs(stable=w(4, 4, NEW, paused=True), new=w(4, 0, NEW, pods=0)),
        Phase.HEALTHY,
        5,
        [Fold(FoldStage.RELEASE, 4)],
        None,
    ),
    (
        "abort during promotion is refused",
        running(5, Phase.PROMOTING),
        obs(stable=w(0, 0, paused=True), new=w(4, 4, NEW), command=CommandName.ABORT),
        Phase.PROMOTING,
        5,
        [Fold(FoldStage.HOLD, 4)],
        1.0,
    ),
    (
        "a new template during promotion waits until it is done",
        running(5, Phase.PROMOTING),
        obs(stable=w(0, 0, paused=True), new=w(4, 4, NEW), target=NEWER),
        Phase.PROMOTING,
        5,
        [Fold(FoldStage.HOLD, 4)],
        1.0,
    ),
    (
        "aborted revision is not retried",
        replace(HEALTHY, phase=Phase.ABORTED, failed_hash=NEW),
        obs(),
        Phase.ABORTED,
        0,
        [],
        None,
    ),
    (
        "aborted: finish a half-done restore",
        replace(HEALTHY, phase=Phase.ABORTED, failed_hash=NEW),
        obs(stable=w(3, 3), new=w(1, 0, NEW)),
        Phase.ABORTED,
        0,
        [Scale(Track.STABLE, 4), Scale(Track.CANARY, 0)],
        1.0,
    ),
    (
        "retry starts the failed revision again",
        replace(HEALTHY, phase=Phase.ABORTED, failed_hash=NEW),
        obs(command=CommandName.RETRY),
        Phase.PROGRESSING,
        0,
        [Deploy(Track.CANARY, 1)],
        1.0,
    ),
    (
        "a newer revision after an abort starts",
        replace(HEALTHY, phase=Phase.ABORTED, failed_hash=NEW),
        obs(target=NEWER),
        Phase.PROGRESSING,
        0,
        [Deploy(Track.CANARY, 1)],
        1.0,
    ),
    (
        "reverting git after an abort is healthy",
        replace(HEALTHY, phase=Phase.ABORTED, failed_hash=NEW),
        obs(target=OLD),
        Phase.HEALTHY,
        0,
        [],
        None,
    ),
    (
        "new revision mid-rollout supersedes: the stable grows first",
        running(1),
        obs(stable=w(3), new=w(1, 1, NEW), target=NEWER),
        Phase.PROGRESSING,
        0,
        [Scale(Track.STABLE, 4)],
        0.0,
    ),
    (
        "... the superseded canary serves until the stable is Ready",
        running(0, target_hash=NEWER),
        obs(stable=w(4, 3), new=w(1, 1, NEW), target=NEWER),
        Phase.PROGRESSING,
        0,
        [],
        1.0,
    ),
    (
        "... then the new canary replaces it",
        running(0, target_hash=NEWER),
        obs(stable=w(4), new=w(1, 1, NEW), target=NEWER),
        Phase.PROGRESSING,
        0,
        [Deploy(Track.CANARY, 1)],
        1.0,
    ),
    (
        "superseded step 0 redeploys the canary",
        running(0, target_hash=NEWER),
        obs(new=w(0, 0, NEW), target=NEWER),
        Phase.PROGRESSING,
        0,
        [Deploy(Track.CANARY, 1)],
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("state", "observation", "phase", "step", "actions", "requeue"),
    [row[1:] for row in CANARY_ROWS],
    ids=[row[0] for row in CANARY_ROWS],
)
def test_canary_transitions(state, observation, phase, step, actions, requeue) -> None:
    d = decide(state, observation, CANARY, NOW)
    assert (d.state.phase, d.state.step, kinds(d), d.requeue_after) == (phase, step, actions, requeue)


def scaled_to(total: int, observation: Observation) -> Observation:
    return replace(observation, total=total)


@pytest.mark.parametrize(
    ("state", "observation", "actions"),
    [
        # CANARY's step 3 is `pause: {}` after setWeight 25: 1 canary + 3 stable of 4; the commit asks for 8.
        (
            running(3, Phase.PAUSED, weight=25),
            scaled_to(8, obs(stable=w(3), new=w(1, 1, NEW))),
            [Deploy(Track.CANARY, 2)],
        ),
        (
            running(3, Phase.PAUSED, weight=25),
            scaled_to(8, obs(stable=w(3), new=w(2, 2, NEW))),
            [Scale(Track.STABLE, 6)],
        ),
        (running(1, weight=25), scaled_to(8, obs(stable=w(3), new=w(1, 1, NEW))), [Deploy(Track.CANARY, 2)]),
        # scaled down: the stable shrinks, the canary after it (stable first on the way down)
        (
            running(3, Phase.PAUSED, weight=25),
            scaled_to(2, obs(stable=w(3), new=w(1, 1, NEW))),
            [Scale(Track.STABLE, 1)],
        ),
        (running(3, Phase.PAUSED, weight=25), obs(stable=w(3), new=w(1, 1, NEW)), []),
        # an HPA scaled the stable: Git asks for what the rollout started with, the HPA's count stands
        (running(3, Phase.PAUSED, weight=25, replicas=4), obs(stable=w(5), new=w(1, 1, NEW)), []),
    ],
    ids=["paused: canary first", "paused: then stable", "timed pause: canary first", "scaled down", "unchanged", "hpa"],
)
def test_a_scale_only_commit_mid_canary_is_applied_at_the_weight_reached(state, observation, actions) -> None:
    """Argo Rollouts scales a paused canary at once; the split waited for the next setWeight, behind an
    indefinite pause for as long as nobody promoted it."""
    d = decide(state, observation, CANARY, NOW)
    assert (d.state.phase, d.state.step, kinds(d)) == (state.phase, state.step, actions)


def analysis_state(*runs: CheckRun) -> RolloutState:
    return running(2, checks=runs)


ANALYSIS_ROWS = [
    ("entering an analysis step starts its checks", running(2), (), Phase.PROGRESSING, 2, "Running"),
    (
        "one success of two keeps running",
        analysis_state(CheckRun("errors", NOW)),
        (m("errors", CheckOutcome.SUCCESS, [0.01]),),
        Phase.PROGRESSING,
        2,
        "Running",
    ),
    (
        "count reached: next step",
        analysis_state(CheckRun("errors", NOW, taken=1, successes=1)),
        (m("errors", CheckOutcome.SUCCESS, [0.01]),),
        Phase.PAUSED,
        3,
        None,
    ),
    (
        "a failure aborts with evidence",
        analysis_state(CheckRun("errors", NOW)),
        (m("errors", CheckOutcome.FAILURE, [0.3]),),
        Phase.ABORTED,
        2,
        "Failed",
    ),
    (
        "no data pauses",
        analysis_state(CheckRun("errors", NOW)),
        (m("errors", CheckOutcome.INCONCLUSIVE, []),),
        Phase.PAUSED,
        2,
        "Inconclusive",
    ),
    (
        "provider errors alone never pass",
        analysis_state(CheckRun("errors", NOW, consecutive_errors=4)),
        (m("errors", CheckOutcome.ERROR),),
        Phase.PAUSED,
        2,
        "Inconclusive",
    ),
]


@pytest.mark.parametrize(
    ("state", "measurements", "phase", "step", "verdict"),
    [row[1:] for row in ANALYSIS_ROWS],
    ids=[row[0] for row in ANALYSIS_ROWS],
)
def test_canary_analysis_step(state, measurements, phase, step, verdict) -> None:
    d = decide(state, obs(stable=w(3), new=w(1, 1, NEW), measurements=measurements), CANARY, NOW)
    assert (d.state.phase, d.state.step) == (phase, step)
    assert (d.state.checks[0].verdict.value if d.state.checks else None) == verdict


def test_a_completed_analysis_step_is_kept_as_the_rollouts_evidence() -> None:
    """What the release ledger notes as the analysis values of a release that succeeded."""
    run = CheckRun("errors", NOW, taken=1, successes=1)
    d = decide(
        analysis_state(run),
        obs(stable=w(3), new=w(1, 1, NEW), measurements=(m("errors", CheckOutcome.SUCCESS, [0.01]),)),
        CANARY,
        NOW,
    )
    assert d.state.step == 3 and d.state.checks == ()
    [kept] = d.state.passed
    assert (kept.name, kept.verdict.value, kept.last.value if kept.last else None) == ("errors", "Successful", [0.01])
    assert RolloutState.from_json(d.state.to_json()).passed == d.state.passed


def test_abort_records_reason_evidence_event_and_history() -> None:
    d = decide(
        analysis_state(CheckRun("errors", NOW)),
        obs(
            stable=w(3),
            new=w(1, 1, NEW),
            measurements=(Measurement("errors", CheckOutcome.FAILURE, NOW, [0.3], "successCondition not met"),),
        ),
        CANARY,
        NOW,
    )
    assert d.state.failed_hash == NEW
    assert d.state.abort_reason == "analysis at step 3/5 failed: errors"
    assert "0.3" in d.state.evidence[0] and "errors" in d.state.evidence[0]
    assert reasons(d) == ["RolloutAborted"]
    assert d.state.history[-1].outcome == "aborted" and d.state.history[-1].evidence == d.state.evidence


def test_promote_after_inconclusive_analysis_moves_on() -> None:
    paused = running(
        2, Phase.PAUSED, checks=(CheckRun("errors", NOW, taken=1, inconclusive=1, verdict=CheckVerdict.INCONCLUSIVE),)
    )
    d = decide(paused, obs(stable=w(3), new=w(1, 1, NEW), command=CommandName.PROMOTE), CANARY, NOW)
    assert (d.state.phase, d.state.step) == (Phase.PAUSED, 3)  # the next step is the indefinite pause


def test_background_analysis_failure_aborts_at_any_step() -> None:
    state = running(1, background=(CheckRun("bg", NOW),))
    d = decide(
        state, obs(stable=w(3), new=w(1, 1, NEW), measurements=(m("bg", CheckOutcome.FAILURE, [0.9]),)), CANARY_BG, NOW
    )
    assert d.state.phase is Phase.ABORTED and "background" in d.state.abort_reason


def test_checks_due_lists_only_due_runs_of_the_current_step() -> None:
    state = running(2, checks=(CheckRun("errors", NOW + 1),))
    assert checks_due(state, CANARY, NOW) == ()
    assert [c.name for c in checks_due(state, CANARY, NOW + 1)] == ["errors"]


def test_decreasing_weight_grows_stable_before_shrinking_canary() -> None:
    policy = parse_policy(
        {"rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 75}, {"setWeight": 25}]}}}
    )
    d = decide(running(1), obs(stable=w(1), new=w(3, 3, NEW)), policy, NOW)
    assert kinds(d) == [Scale(Track.STABLE, 3)]
    d = decide(running(1), obs(stable=w(3), new=w(3, 3, NEW)), policy, NOW)
    assert kinds(d) == [Deploy(Track.CANARY, 1)]


def test_weight_that_cannot_be_honoured_warns_once() -> None:
    policy = parse_policy({"rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 10}]}}})
    observation = replace(obs(), total=2, stable=w(2))
    d = decide(running(0), observation, policy, NOW)
    assert reasons(d) == ["WeightNotHonoured"] and "50%" in d.state.warnings[0]
    assert reasons(decide(d.state, observation, policy, NOW)) == []


# -- blue-green ---------------------------------------------------------------------------------------------------

BG_HEALTHY = RolloutState(phase=Phase.HEALTHY, stable_hash=OLD, target_hash=OLD, stable_color="blue")


def bg(step: int, phase: Phase = Phase.PROGRESSING, **kw: object) -> RolloutState:
    return replace(running(step, phase, stable_color="blue"), **kw)  # type: ignore[arg-type]


BG_ROWS = [
    (
        "first deploy: blue, both services",
        RolloutState(),
        obs(stable=NONE),
        BLUE_GREEN,
        Phase.HEALTHY,
        0,
        [Deploy(Track.BLUE, 4), Route(ServiceRole.ACTIVE, Track.BLUE), Route(ServiceRole.PREVIEW, Track.BLUE)],
    ),
    (
        "new template: preview in the other colour",
        BG_HEALTHY,
        obs(),
        BLUE_GREEN,
        Phase.PROGRESSING,
        0,
        [Deploy(Track.GREEN, 4), Route(ServiceRole.PREVIEW, Track.GREEN)],
    ),
    ("waits for the preview to be Ready", bg(0), obs(new=w(4, 2, NEW)), BLUE_GREEN, Phase.PROGRESSING, 0, []),
    ("preview Ready: pre-promotion analysis", bg(0), obs(new=w(4, 4, NEW)), BLUE_GREEN, Phase.PROGRESSING, 1, []),
    (
        "pre-promotion failure aborts",
        bg(1, checks=(CheckRun("smoke", NOW),)),
        obs(new=w(4, 4, NEW), measurements=(m("smoke", CheckOutcome.FAILURE, 500),)),
        BLUE_GREEN,
        Phase.ABORTED,
        1,
        [Route(ServiceRole.PREVIEW, Track.BLUE), Scale(Track.GREEN, 0)],
    ),
    (
        "analysis passed: switch",
        bg(1, checks=(CheckRun("smoke", NOW),)),
        obs(new=w(4, 4, NEW), measurements=(m("smoke", CheckOutcome.SUCCESS, 200),)),
        BLUE_GREEN,
        Phase.PROMOTING,
        3,
        [Route(ServiceRole.ACTIVE, Track.GREEN)],
    ),
    ("autoPromotion off pauses before the switch", bg(2), obs(new=w(4, 4, NEW)), MANUAL_BG, Phase.PAUSED, 2, []),
    (
        "the switch waits while a preview pod is not Ready",
        bg(2),
        obs(new=w(4, 3, NEW)),
        BLUE_GREEN,
        Phase.PROGRESSING,
        2,
        [],
    ),
    (
        "... also when promoted by hand",
        bg(2, Phase.PAUSED),
        obs(new=w(4, 3, NEW), command=CommandName.PROMOTE),
        MANUAL_BG,
        Phase.PROGRESSING,
        2,
        [],
    ),
    (
        "promote switches",
        bg(2, Phase.PAUSED),
        obs(new=w(4, 4, NEW), command=CommandName.PROMOTE),
        MANUAL_BG,
        Phase.PROMOTING,
        3,
        [Route(ServiceRole.ACTIVE, Track.GREEN)],
    ),
    (
        "post-promotion failure switches back",
        bg(3, Phase.PROMOTING, checks=(CheckRun("smoke", NOW),)),
        obs(new=w(4, 4, NEW), measurements=(m("smoke", CheckOutcome.FAILURE, 500),)),
        BLUE_GREEN,
        Phase.ABORTED,
        3,
        [Route(ServiceRole.ACTIVE, Track.BLUE), Route(ServiceRole.PREVIEW, Track.BLUE), Scale(Track.GREEN, 0)],
    ),
    (
        "scale-down delay holds the old colour",
        bg(4, Phase.PROMOTING, switched_at=NOW - 2),
        obs(new=w(4, 4, NEW)),
        BLUE_GREEN,
        Phase.PROMOTING,
        4,
        [],
    ),
    (
        "after the delay the old colour goes to zero",
        bg(4, Phase.PROMOTING, switched_at=NOW - 5),
        obs(new=w(4, 4, NEW)),
        BLUE_GREEN,
        Phase.HEALTHY,
        4,
        [Route(ServiceRole.PREVIEW, Track.GREEN), Scale(Track.BLUE, 0)],
    ),
    (
        "failing preview pods abort",
        bg(0),
        obs(new=w(4, 0, NEW), pods=FAILING),
        BLUE_GREEN,
        Phase.ABORTED,
        0,
        [Route(ServiceRole.PREVIEW, Track.BLUE), Scale(Track.GREEN, 0)],
    ),
    (
        "an app switching to blue-green first copies its running Deployment to a colour",
        RolloutState(),
        obs(),
        BLUE_GREEN,
        Phase.IDLE,
        0,
        [Clone(Track.BLUE, 4)],
    ),
    (
        "... which serves only once Ready",
        RolloutState(),
        obs(new=w(4, 2, OLD, rolled=False)),
        BLUE_GREEN,
        Phase.IDLE,
        0,
        [],
    ),
    (
        "... then takes the active Service, and the plain Deployment goes to zero",
        RolloutState(),
        obs(new=w(4, 4, OLD)),
        BLUE_GREEN,
        Phase.IDLE,
        0,
        [Route(ServiceRole.ACTIVE, Track.BLUE), Route(ServiceRole.PREVIEW, Track.BLUE), Scale(Track.STABLE, 0)],
    ),
    (
        "... and the first rollout previews in the other colour",
        RolloutState(stable_color="blue"),
        obs(),
        BLUE_GREEN,
        Phase.PROGRESSING,
        0,
        [Deploy(Track.GREEN, 4), Route(ServiceRole.PREVIEW, Track.GREEN)],
    ),
    (
        "a Service changed in git is re-routed",
        BG_HEALTHY,
        replace(obs(target=OLD), services_current=False),
        BLUE_GREEN,
        Phase.HEALTHY,
        0,
        [Route(ServiceRole.ACTIVE, Track.BLUE), Route(ServiceRole.PREVIEW, Track.BLUE)],
    ),
    (
        "superseded after the switch switches back",
        bg(3, Phase.PROMOTING),
        obs(new=w(4, 4, NEW), target=NEWER),
        BLUE_GREEN,
        Phase.PROGRESSING,
        0,
        [Route(ServiceRole.ACTIVE, Track.BLUE), Deploy(Track.GREEN, 4), Route(ServiceRole.PREVIEW, Track.GREEN)],
    ),
]


@pytest.mark.parametrize(
    ("state", "observation", "policy", "phase", "step", "actions"),
    [row[1:] for row in BG_ROWS],
    ids=[row[0] for row in BG_ROWS],
)
def test_blue_green_transitions(state, observation, policy: RolloutPolicy, phase, step, actions) -> None:
    d = decide(state, observation, policy, NOW)
    assert (d.state.phase, d.state.step, kinds(d)) == (phase, step, actions)


def test_blue_green_promoted_while_a_preview_pod_is_not_ready_switches_once_it_is() -> None:
    waiting = decide(bg(2, Phase.PAUSED), obs(new=w(4, 3, NEW), command=CommandName.PROMOTE), MANUAL_BG, NOW)
    assert kinds(waiting) == [] and waiting.state.message == "switch waits for the preview: 3/4 Ready"
    later = decide(waiting.state, obs(new=w(4, 4, NEW)), MANUAL_BG, NOW + 1)  # the promote is not asked again
    assert (later.state.phase, kinds(later)) == (Phase.PROMOTING, [Route(ServiceRole.ACTIVE, Track.GREEN)])


def test_blue_green_promote_full_skips_the_analyses_but_switches_only_to_a_ready_preview() -> None:
    asked = decide(bg(0), obs(new=w(4, 1, NEW), command=CommandName.PROMOTE_FULL), BLUE_GREEN, NOW)
    assert Route(ServiceRole.ACTIVE, Track.GREEN) not in kinds(asked), "switched to a preview 1/4 Ready"
    waiting = decide(asked.state, obs(new=w(4, 3, NEW)), BLUE_GREEN, NOW + 1)
    assert (waiting.state.step, kinds(waiting)) == (0, [])
    switched = decide(waiting.state, obs(new=w(4, 4, NEW)), BLUE_GREEN, NOW + 2)
    assert kinds(switched) == [Route(ServiceRole.ACTIVE, Track.GREEN)], "prePromotionAnalysis was not skipped"
    assert (switched.state.phase, switched.state.step) == (Phase.PROMOTING, 4), "postPromotionAnalysis ran"


def test_a_revert_to_the_stable_mid_canary_skips_every_step() -> None:
    """Argo Rollouts skips the steps of an update back to the stable ReplicaSet; it rolled the stable's own
    template out as a canary, through every pause."""
    reverted = decide(running(3, Phase.PAUSED, weight=25), obs(stable=w(3), new=w(1, 1, NEW), target=OLD), CANARY, NOW)
    assert (reverted.state.phase, kinds(reverted)) == (Phase.HEALTHY, [Scale(Track.STABLE, 4)])
    assert reverted.state.history[-1].outcome == "superseded" and reverted.state.revision == "rev-old"
    serving = decide(reverted.state, obs(stable=w(4, 3), new=w(1, 1, NEW), target=OLD), CANARY, NOW + 1)
    assert kinds(serving) == [], "the canary's pods went before the stable was back"
    back = decide(reverted.state, obs(stable=w(4), new=w(1, 1, NEW), target=OLD), CANARY, NOW + 2)
    assert (back.state.phase, kinds(back)) == (Phase.HEALTHY, [Scale(Track.CANARY, 0)])


def test_a_revert_to_the_stable_mid_blue_green_drops_the_preview() -> None:
    reverted = decide(bg(2, Phase.PAUSED), obs(new=w(4, 4, NEW), target=OLD), MANUAL_BG, NOW)
    assert (reverted.state.phase, kinds(reverted)) == (Phase.HEALTHY, [])
    after = decide(reverted.state, obs(new=w(4, 4, NEW), target=OLD), MANUAL_BG, NOW + 1)
    assert kinds(after) == [Route(ServiceRole.PREVIEW, Track.BLUE), Scale(Track.GREEN, 0)]
    switched = decide(bg(3, Phase.PROMOTING), obs(new=w(4, 4, NEW), target=OLD), BLUE_GREEN, NOW)
    assert (switched.state.phase, kinds(switched)) == (Phase.HEALTHY, [Route(ServiceRole.ACTIVE, Track.BLUE)])


def test_a_scale_only_commit_reaches_both_colours_before_the_switch() -> None:
    """A paused gate can last hours: the active colour serves meanwhile, and a preview left at the old count would
    never satisfy the switch's readiness check."""
    paused = decide(bg(2, Phase.PAUSED, replicas=4), replace(obs(new=w(4, 4, NEW)), total=6), MANUAL_BG, NOW)
    assert (paused.state.phase, kinds(paused)) == (Phase.PAUSED, [Scale(Track.BLUE, 6), Scale(Track.GREEN, 6)])
    assert paused.state.replicas == 6
    again = decide(paused.state, replace(obs(stable=w(6), new=w(6, 6, NEW)), total=6), MANUAL_BG, NOW + 1)
    assert kinds(again) == []
    switched = decide(
        bg(4, Phase.PROMOTING, replicas=4, switched_at=NOW - 1),
        replace(obs(new=w(4, 4, NEW)), total=6),
        BLUE_GREEN,
        NOW,
    )
    assert kinds(switched) == [Scale(Track.GREEN, 6)], "the serving colour is not grown, or the old one is"


def test_blue_green_completion_flips_the_stable_colour() -> None:
    d = decide(bg(4, Phase.PROMOTING, switched_at=NOW - 5), obs(new=w(4, 4, NEW)), BLUE_GREEN, NOW)
    assert (d.state.stable_color, d.state.stable_hash) == ("green", NEW)
    assert d.state.history[-1].outcome == "succeeded"


def test_state_round_trips_through_json() -> None:
    d = decide(
        analysis_state(CheckRun("errors", NOW)),
        obs(stable=w(3), new=w(1, 1, NEW), measurements=(m("errors", CheckOutcome.FAILURE, [0.3]),)),
        CANARY,
        NOW,
    )
    assert RolloutState.from_json(d.state.to_json()) == d.state


def test_blue_green_first_switch_retires_the_plain_deployment() -> None:
    state = replace(running(4, Phase.PROMOTING), switched_at=NOW - 10)
    d = decide(state, obs(new=w(4, 4, NEW)), BLUE_GREEN, NOW)
    assert kinds(d) == [Route(ServiceRole.PREVIEW, Track.BLUE), Scale(Track.STABLE, 0)]
    assert d.state.stable_color == "blue"


# -- a change of strategy ------------------------------------------------------------------------------------------


def on_canary(step: int, **kw: object) -> RolloutState:
    return running(step, strategy="canary", workload="web", **kw)


def test_canary_to_rolling_mid_rollout_rolls_the_stable_then_removes_the_canary() -> None:
    # Half-way through a canary (stable 3, canary 1) the values drop the rollout section.
    canary = frozenset({Track.CANARY})
    d = retire(on_canary(2), obs(stable=w(3), new=NONE), NOW, canary)
    assert d.state.history[-1].outcome == "superseded"
    assert d.state.history[-1].reason == "strategy changed from canary to rolling"
    assert (d.state.strategy, d.state.retiring) == ("rolling", ("canary",))
    assert kinds(d) == [Deploy(Track.STABLE, 4)]
    assert "StrategyChanged" in reasons(d) and d.requeue_after == 1.0

    rolling = w(4, 2, NEW, rolled=False)
    waiting = retire(d.state, obs(stable=rolling), NOW + 1, canary)
    assert kinds(waiting) == [] and waiting.requeue_after == 1.0, "the canary must serve until the stable is Ready"
    assert "2/4 Ready" in waiting.state.message

    done = retire(waiting.state, obs(stable=w(4, 4, NEW)), NOW + 2, canary)
    assert kinds(done) == [Remove(Track.CANARY)]
    assert (done.state.phase, done.state.retiring, done.state.stable_hash) == (Phase.HEALTHY, (), NEW)
    assert len(done.state.history) == 1, "the hand-over is recorded once"
    assert retire(done.state, obs(stable=w(4, 4, NEW)), NOW + 3, frozenset()).actions == ()


def test_rolling_app_whose_deployment_left_the_render_loses_its_colours_at_once() -> None:
    state = RolloutState(
        phase=Phase.HEALTHY, stable_hash=OLD, strategy="blueGreen", workload="web", stable_color="blue"
    )
    d = retire(state, obs(stable=NONE, workload=""), NOW, frozenset({Track.BLUE, Track.GREEN}))
    assert kinds(d) == [Remove(Track.BLUE), Remove(Track.GREEN)]
    assert d.state.history == (), "nothing was rolling out: no superseded entry"
    assert (d.state.retiring, d.state.workload) == ((), "web")


def test_state_from_before_strategies_were_recorded_is_the_current_strategys() -> None:
    d = decide(HEALTHY, obs(target=OLD), CANARY, NOW)
    assert (d.state.strategy, d.state.workload, d.state.retiring, kinds(d)) == ("canary", "web", (), [])
    # Under the rolling strategy it is handed over like any canary or blue-green state: what is left goes ...
    handed = retire(HEALTHY, obs(stable=w(4, 4, OLD), target=OLD), NOW, frozenset({Track.GREEN}))
    assert kinds(handed) == [Remove(Track.GREEN)]
    # ... and with nothing left it just settles, without events about tracks that do not exist.
    quiet = retire(HEALTHY, obs(stable=w(4, 4, OLD), target=OLD), NOW, frozenset())
    assert (quiet.actions, quiet.state.strategy, quiet.state.retiring) == ((), "rolling", ())


def test_rolling_hand_over_with_nothing_left_deploys_nothing() -> None:
    # A canary that completed long ago, an HPA at 7 replicas, the render without replicas: nothing to hand over.
    d = retire(replace(HEALTHY, strategy="canary"), obs(stable=w(7, 7, "live")), NOW, frozenset())
    assert d.actions == () and d.requeue_after is None


def test_canary_to_blue_green_mid_rollout_starts_over_and_retires_the_canary_once_stable_is_full() -> None:
    d = decide(on_canary(2), obs(stable=w(3)), BLUE_GREEN, NOW)
    assert d.state.history[-1].outcome == "superseded" and d.state.strategy == "blueGreen"
    assert d.state.phase is Phase.IDLE and d.state.retiring == ("canary",)
    assert kinds(d) == [Scale(Track.STABLE, 4), Clone(Track.BLUE, 4)], "full stable, copied to a colour first"
    later = decide(d.state, obs(stable=w(4), new=w(4, 0, OLD, rolled=False)), BLUE_GREEN, NOW + 1)
    assert Remove(Track.CANARY) in kinds(later) and later.state.retiring == ()


def test_blue_green_to_canary_recreates_the_stable_deployment_before_removing_the_colours() -> None:
    state = RolloutState(
        phase=Phase.HEALTHY, stable_hash=OLD, target_hash=OLD, strategy="blueGreen", stable_color="blue"
    )
    d = decide(state, obs(stable=NONE, target=OLD), CANARY, NOW)
    assert kinds(d) == [Deploy(Track.STABLE, 4)]
    assert (d.state.stable_color, d.state.retiring) == ("", ("blue", "green"))
    done = decide(d.state, obs(stable=w(4, 4, OLD), target=OLD), CANARY, NOW + 1)
    assert kinds(done) == [Remove(Track.BLUE), Remove(Track.GREEN)]
    assert "LeftoversRemoved" in reasons(done) and done.state.retiring == ()


def test_blue_green_to_canary_never_falls_back_to_the_deployment_from_before_blue_green() -> None:
    # `web` was scaled to zero at blue-green's first switch and still holds that older template; the commit that
    # moves to canary also ships a new template.
    state = RolloutState(
        phase=Phase.HEALTHY, stable_hash=OLD, target_hash=OLD, strategy="blueGreen", stable_color="blue"
    )
    d = decide(state, obs(stable=w(0, 0, "older")), CANARY, NOW)
    assert kinds(d) == [Deploy(Track.STABLE, 4)], "no canary against (or scale-up of) the pre-blue-green version"
    assert d.state.retiring == ("blue", "green") and d.state.stable_hash == NEW


def test_back_to_blue_green_while_its_colours_retire_keeps_them() -> None:
    on_canary_retiring = RolloutState(
        phase=Phase.HEALTHY, stable_hash=OLD, target_hash=OLD, strategy="canary", retiring=("blue", "green")
    )
    d = decide(on_canary_retiring, obs(target=OLD), BLUE_GREEN, NOW)
    assert Remove(Track.BLUE) not in kinds(d) and Remove(Track.GREEN) not in kinds(d), "the colours serve again"
    assert Remove(Track.CANARY) in kinds(d) and d.state.retiring == ()


def test_an_aborted_rollout_does_not_keep_a_strategy_change_looking_settled() -> None:
    aborted = RolloutState(phase=Phase.ABORTED, stable_hash=OLD, failed_hash=NEW, strategy="canary", workload="web")
    d = decide(aborted, obs(), BLUE_GREEN, NOW)
    assert (d.state.phase, kinds(d)) == (Phase.IDLE, [Clone(Track.BLUE, 4), Remove(Track.CANARY)])
    r = retire(aborted, obs(stable=w(4, 4, OLD)), NOW, frozenset({Track.CANARY}))
    assert (r.state.phase, kinds(r)) == (Phase.IDLE, [Deploy(Track.STABLE, 4)])


def test_colouring_copies_what_an_hpa_runs_and_gives_up_on_a_failing_copy() -> None:
    assert kinds(decide(RolloutState(), obs(stable=w(7)), BLUE_GREEN, NOW)) == [Clone(Track.BLUE, 7)]
    failing = decide(RolloutState(), obs(new=w(4, 0, OLD, rolled=False), pods=FAILING), BLUE_GREEN, NOW)
    assert "ColouringSkipped" in reasons(failing) and failing.state.phase is Phase.PROGRESSING
    assert kinds(failing) == [Deploy(Track.BLUE, 4), Route(ServiceRole.PREVIEW, Track.BLUE)]
