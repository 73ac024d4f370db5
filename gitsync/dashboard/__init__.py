"""The read-only dashboard: environments x apps, rollouts live, history and promotions, in a browser.

``gitsync dashboard`` serves it on 127.0.0.1 with the user's kubeconfig; the agent serves it on its own port
when ``dashboard:`` is set in agent.yaml, behind bearer tokens (``access``). Gathering (``read``), the values
shown (``view``, pure), charts (``charts``, pure) and the HTTP server (``server``) are apart; templates and
assets live in ``templates/`` and ``static/`` and ship with the package (no build step).
"""
