"""What the status server and its client both know of an endpoint, and nothing else.

:mod:`~lmsupervisor.endpoint.tokenfile` is the TCP transport's endpoint file (the server
writes it, the client reads it); :mod:`~lmsupervisor.endpoint.peer` reads the uid of the
process at the other end of a Unix socket (the server checks who may control it, the
client who answers). The server (:mod:`lmsupervisor.statusd`) and the client
(:mod:`lmsupervisor.client`) import this room, never each other. Standard library only:
``lmsupervisor status`` imports it.
"""
