"""The uid of the process at the other end of a Unix socket (design §5).

The server refuses control verbs to other uids; the client refuses a server that runs as
someone it does not trust. Standard library only.
"""

from __future__ import annotations

import socket
import sys


def socket_peer_uid(sock: socket.socket, platform: str = sys.platform) -> int | None:
    """The uid of the process at the other end of a Unix socket: ``SO_PEERCRED`` (Linux),
    ``LOCAL_PEERCRED`` (macOS, FreeBSD: ``struct xucred``, as ``getpeereid(3)``); None
    elsewhere or when it cannot be read. ``platform`` is ``sys.platform``."""
    try:
        if platform.startswith("linux"):
            creds = sock.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_PEERCRED", 17), 12)
            return int.from_bytes(creds[4:8], sys.byteorder, signed=True)
        if platform.startswith(("darwin", "freebsd")):
            # SOL_LOCAL 0, LOCAL_PEERCRED 1 (<sys/un.h>); struct xucred {u_int cr_version; uid_t cr_uid;
            # short cr_ngroups; gid_t cr_groups[16]} is 76 bytes
            creds = sock.getsockopt(getattr(socket, "SOL_LOCAL", 0), getattr(socket, "LOCAL_PEERCRED", 1), 76)
            return int.from_bytes(creds[4:8], sys.byteorder)
    except OSError:
        return None
    return None
