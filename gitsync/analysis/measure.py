"""Taking one measurement of one check: the only place analysis touches the outside world, through ports.

Contract: I/O only through ``ports.MetricsQuery`` and ``ports.HttpProbe`` (and the pod report the executor
already gathered); a provider error becomes an ERROR measurement, never an exception, so one broken check
cannot stop the rollout's other decisions (the pod gate, a human abort).

Queries and URLs may name the rollout's subjects as ``${namespace}``, ``${app}``, ``${env}``, ``${workload}``
(what the new version's pods are named after: the canary's ReplicaSet or the colour's Deployment), ``${stable}``
(the stable Deployment) and ``${track}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from string import Template

from gitsync.analysis.judge import judge, judge_http
from gitsync.analysis.pod_health import inspect_pods
from gitsync.analysis.run import CheckOutcome, Measurement
from gitsync.analysis.spec import CheckSpec, CheckType, PodHealthPolicy
from gitsync.errors import QueryRejectedError, TransientError
from gitsync.model import Json
from gitsync.ports import HttpProbe, MetricsQuery

__all__ = ["CheckContext", "Measurer"]


@dataclass(frozen=True, slots=True)
class CheckContext:
    namespace: str
    app: str
    env: str
    workload: str
    stable: str
    track: str
    pods: tuple[Json, ...] = ()
    """The new version's current pods, for podHealth checks."""
    deployment: Json | None = None
    pod_policy: PodHealthPolicy = field(default_factory=PodHealthPolicy)

    def expand(self, text: str) -> str:
        return Template(text).safe_substitute(
            namespace=self.namespace,
            app=self.app,
            env=self.env,
            workload=self.workload,
            stable=self.stable,
            track=self.track,
        )


class Measurer:
    """Measures checks through the ports it is composed with (``runtime``/``cli`` pass the Prometheus and HTTP
    adapters). A check whose port was not given is measured as an ERROR naming what is missing: it pauses the
    rollout as inconclusive after ``run.ERROR_LIMIT`` such errors, it never passes. podHealth needs no port."""

    def __init__(self, prometheus: MetricsQuery | None = None, http: HttpProbe | None = None) -> None:
        self._prometheus = prometheus
        self._http = http

    def measure(self, spec: CheckSpec, ctx: CheckContext, now: float) -> Measurement:
        if spec.type is CheckType.POD_HEALTH:
            policy = PodHealthPolicy(
                max_restarts=ctx.pod_policy.max_restarts if spec.max_restarts is None else spec.max_restarts,
                progress_deadline=ctx.pod_policy.progress_deadline
                if spec.progress_deadline is None
                else spec.progress_deadline,
            )
            return inspect_pods(ctx.pods, policy, now, ctx.deployment).measurement(spec.name, now)
        try:
            if spec.type is CheckType.PROMETHEUS:
                if self._prometheus is None:
                    return Measurement(spec.name, CheckOutcome.ERROR, now, None, "no Prometheus client configured")
                values = self._prometheus.query(ctx.expand(spec.address), ctx.expand(spec.query), spec.timeout)
                return judge(spec, values, now)
            if self._http is None:
                return Measurement(spec.name, CheckOutcome.ERROR, now, None, "no HTTP client configured")
            status, body = self._http.get(ctx.expand(spec.url), spec.timeout)
            return judge_http(spec, status, body, now)
        except QueryRejectedError as e:
            # A typo in the query: retrying cannot help, so it counts as inconclusive at once (the rollout pauses)
            # and says which field of the values to fix.
            return Measurement(spec.name, CheckOutcome.INCONCLUSIVE, now, None, f"{spec.path or spec.name}.query: {e}")
        except TransientError as e:
            return Measurement(spec.name, CheckOutcome.ERROR, now, None, str(e))
