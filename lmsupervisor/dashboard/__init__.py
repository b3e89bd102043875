"""The local web dashboard (design §9 ``[dashboard]``): the supervisor's state, live, in a
browser, with restart and reload buttons; loopback only, behind a per-start token.

:mod:`~lmsupervisor.dashboard.server` serves it (aiohttp: token to cookie, ``Origin``
checks, server-sent events from the event hub), :mod:`~lmsupervisor.dashboard.rings` keeps
what the status does not (latency charts, the restart timeline, recent log events) in
bounded rings, :mod:`~lmsupervisor.dashboard.tokenfile` is where `lmsupervisor dashboard`
finds its URL; the page itself is ``static/`` (no library, no internet). It uses the
supervisor only through its events, its status and its messages.
"""
