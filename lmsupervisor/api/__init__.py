"""The browser native-messaging host (``nativehost.py``) and its installer (``nativehost_install.py``).

The status server moved to :mod:`lmsupervisor.statusd`, its client to :mod:`lmsupervisor.client`;
these two are to move to a room of their own as well.
"""
