"""The status server: HTTP/1.1 + JSON on the status socket, or loopback TCP with a token (design §5).

:mod:`~lmsupervisor.statusd.server` (:class:`StatusServer`: routes, answers, connection
limits) answers over a :mod:`~lmsupervisor.statusd.transport` (Unix socket or TCP + bearer
token) in a folder :mod:`~lmsupervisor.statusd.socketdir` makes private (and holds the
one-instance lock in). :mod:`~lmsupervisor.statusd.http1` parses requests and formats
answers, :mod:`~lmsupervisor.statusd.conn` bounds each connection's time,
:mod:`~lmsupervisor.statusd.broadcast` fans events out to ``/v1/events`` streams and
:mod:`~lmsupervisor.statusd.metrics` renders ``/metrics``.

The server uses the supervisor through its snapshot and messages only, and shares nothing
with its client (:mod:`lmsupervisor.client`) but :mod:`lmsupervisor.endpoint`.
"""
