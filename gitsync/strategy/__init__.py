"""Progressive delivery: canary and blue-green rollouts of a Deployment, with analysis and automatic rollback.

``policy`` parses ``values["rollout"]``; ``state`` is what persists between steps; ``model`` holds the values the
step function reads and returns; ``decide`` is the pure step function, a table of (phase, strategy) -> handler over
``canary``, ``bluegreen``, ``handover`` (a change of strategy) and ``draft`` (what both share), with ``checks``
choosing the analysis a step runs; ``executor`` runs one step per call: ``observe`` gathers, ``decide`` decides,
``act`` performs, with ``layout`` naming the tracks; ``replicas`` is the weight math; ``control`` holds the human
commands and the status view. See docs/progressive-delivery.md.
"""
