"""The node's web side: the dashboard, ``/healthz``, ``/readyz`` and ``/metrics`` (Flask, waitress).

- :mod:`service.web.view`: what the web side needs of the node (a protocol).
- :mod:`service.web.auth`: who is asking (session, basic auth, bearer token) and CSRF.
- :mod:`service.web.snapshot`: what the dashboard shows, read from the running node.
- :mod:`service.web.app`: the Flask application (pages, actions, probes).
- :mod:`service.web.server`: the waitress server in a thread, started and stopped by the node.
"""
