"""Progressive delivery: canary and blue-green rollouts of a Deployment, with analysis and automatic rollback.

``policy`` parses ``values["rollout"]``; ``state`` is what persists between steps; ``decide`` is the pure step
function; ``executor`` gathers, decides, acts and persists, one step per call; ``replicas`` is the weight math;
``control`` holds the human commands and the status view. See docs/progressive-delivery.md.
"""
