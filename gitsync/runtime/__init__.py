"""The long-running agent: configuration, the reconcile queue, triggers (poll, webhooks), HTTP, leader election
and the reconcile loop that ties the stages together.

Layering: ``config``, ``queue`` and ``webhooks`` are pure (no I/O); ``http``, ``leader`` and ``agent`` do the I/O
through ports and adapters.
"""
