"""The holding proxy (design §9): LM Studio's HTTP surface on ``[proxy] listen``, where a
recovery is a wait instead of an error.

``hold.py`` is the pure decision (may a request go now, and the error bodies);
``server.py`` serves and forwards (aiohttp's server and client); ``health.py`` the
``/healthz`` answer and the read-only ``[metrics] listen`` port. The proxy uses the
supervisor through its snapshot and the messages it reduces, never LM Studio's adapter.
"""
