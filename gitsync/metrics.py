"""Prometheus metrics of the agent, served at ``/metrics``.

The metric objects are module globals in the default registry (as ``gitsync.drift``'s drift gauges, which
``/metrics`` serves too); their names and labels are a public interface (dashboards and alerts use them), so
they never change. Labels are ``app`` and ``env`` (the ``AppEnv``), never a revision: unbounded label values
would grow the registry forever.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gitsync.model import AppEnv

__all__ = [
    "GIT_FETCH_SECONDS",
    "GIT_POLLS",
    "LAST_SUCCESS",
    "LEADER",
    "RECONCILE_SECONDS",
    "SYNCS",
    "WEBHOOKS",
    "observe_reconcile",
]

RECONCILE_SECONDS = Histogram(
    "gitsync_reconcile_duration_seconds",
    "Time of one reconcile of an app-env (fetch, render, sync, verify, record)",
    ["app", "env"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SYNCS = Counter(
    "gitsync_syncs",
    "Reconciles by release result, lower-case (succeeded, progressing, paused, rolledback, failed, rendererror, ...)",
    ["app", "env", "result"],
)
LAST_SUCCESS = Gauge(
    "gitsync_last_successful_sync_timestamp_seconds",
    "When an app-env last finished a sync without errors (Unix time)",
    ["app", "env"],
)
GIT_FETCH_SECONDS = Histogram(
    "gitsync_git_fetch_duration_seconds",
    "Time of a shallow fetch of the branch plus its snapshot",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
GIT_POLLS = Counter(
    "gitsync_git_polls",
    "Checks of the branch head (ls-remote) by result: unchanged, moved, error",
    ["result"],
)
WEBHOOKS = Counter(
    "gitsync_webhook_requests",
    "Webhook deliveries by provider and verdict: accepted, ignored, unauthorized, too_large, bad_request, rate_limited",
    ["provider", "result"],
)
LEADER = Gauge("gitsync_leader", "1 while this replica holds the leader lease (or runs without election)")


def observe_reconcile(key: AppEnv, seconds: float, result: str, finished_at: float, success: bool) -> None:
    """Record one reconcile: duration, result count, and the last-success time when it synced cleanly."""
    RECONCILE_SECONDS.labels(key.app, key.env).observe(seconds)
    SYNCS.labels(key.app, key.env, result).inc()
    if success:
        LAST_SUCCESS.labels(key.app, key.env).set(finished_at)
