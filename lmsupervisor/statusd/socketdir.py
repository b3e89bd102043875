"""The status socket's folder, group and lock: a place nobody else controls (design §5, §6).

The folder holding the socket is created 0700 (0750 with ``status.group``) and opened
with ``O_NOFOLLOW`` (Unix): a symlink, a folder owned by another uid, or one writable by group or
others is refused with a :class:`~lmsupervisor.errors.ConfigError` naming the key
(``status.socket`` or ``status.group``; the CLI exits 78) and the fix. The one-instance
lock beside the socket is opened without following symlinks either. On Windows (no uids,
no modes, :attr:`~lmsupervisor.platform.base.OsPlatform.posix_files` false) the folder is
only created: the user's profile folder is private there.

Only the folder this module creates, or one named ``lmsupervisor`` (the default's name),
has its mode and group adjusted; any other configured folder is checked, never changed.
Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from lmsupervisor.config import Config, socket_path
from lmsupervisor.errors import ConfigError, InstanceLockedError
from lmsupervisor.platform import current as this_os

SOCKET_PATH_MAX = 104  # bytes: sun_path is 108 on Linux, 104 on macOS (NUL included)
MANAGED_NAME = "lmsupervisor"  # a folder of this name is ours to chmod/chgrp


def resolve_group(group: str) -> int | None:
    """The gid of ``status.group`` (a name, or a number), None when unset.

    Raises :class:`ConfigError` (key ``status.group``) when no such group exists here.
    """
    if not group:
        return None
    gid = this_os().group_id(group)  # ConfigError where there are no groups (Windows)
    if gid is not None:
        return gid
    raise ConfigError(
        f"status.group: expected a group that exists on this machine, got {group!r}",
        key="status.group",
        hint=f"create it (`groupadd {group}`), or remove status.group",
    )


def _refuse(message: str, hint: str) -> ConfigError:
    return ConfigError(f"status.socket: {message}", key="status.socket", hint=hint)


def check_socket_path(path: Path) -> None:
    """Check, without changing anything, that ``path`` can be our socket.

    Refused (:class:`ConfigError`, key ``status.socket``): a path too long for AF_UNIX, an
    existing path that is not a socket (or is a symlink), and an existing folder that
    :func:`prepare_socket_dir` would refuse. Where there are no Unix sockets (Windows) the
    path only names the TCP endpoint file: nothing is checked.
    """
    if not this_os().unix_sockets:
        return
    if len(os.fsencode(path)) >= SOCKET_PATH_MAX:
        raise _refuse(
            f"{path} is longer than the {SOCKET_PATH_MAX - 1} bytes a Unix socket path may have",
            "choose a shorter path",
        )
    try:
        info = path.lstat()
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise _refuse(f"{path.parent} is not a folder", "choose another status.socket") from None
    else:
        if not stat.S_ISSOCK(info.st_mode):
            kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a socket"
            raise _refuse(f"{path} exists and is {kind}", "move it away, or choose another status.socket")
    folder = path.parent
    with contextlib.suppress(FileNotFoundError):
        _check_folder(folder, folder.lstat(), gid=None, managed=folder.name == MANAGED_NAME)


def check_config(cfg: Config) -> None:
    """What `config check` and `run` verify about ``[status]`` before touching anything.

    Raises :class:`ConfigError` naming ``status.group`` or ``status.socket``.
    """
    resolve_group(cfg.status.group)
    check_socket_path(socket_path(cfg))


def _check_folder(folder: Path, info: os.stat_result, gid: int | None, managed: bool) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(f"{folder} is a symlink; the socket folder must be a real folder", f"remove {folder}")
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(f"{folder} is not a folder", f"move {folder} away, or choose another status.socket")
    own = this_os().uid()
    if own is not None and info.st_uid != own:
        raise _refuse(
            f"{folder} belongs to uid {info.st_uid}, not to us (uid {own})",
            f"remove {folder} (another user may have planted it), or choose another status.socket",
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise _refuse(
            f"{folder} is writable by {'others' if mode & 0o002 else 'its group'} (mode {mode:04o}): "
            "anyone who can write there can replace the socket",
            f"`chmod go-w {folder}`, or put the socket in a folder of its own",
        )
    if gid is not None and not managed and (info.st_gid != gid or not mode & 0o010):
        raise ConfigError(
            f"status.group: members of gid {gid} cannot enter {folder} (group {info.st_gid}, mode {mode:04o})",
            key="status.group",
            hint=f"`chgrp {gid} {folder} && chmod g+x {folder}`, or use a folder named {MANAGED_NAME}",
        )


def prepare_socket_dir(path: Path, gid: int | None = None) -> None:
    """Create the socket's folder (0700, or 0750 owned by group ``gid``), or check an existing one.

    The folder is opened with ``O_NOFOLLOW`` and checked on the open descriptor. Raises
    :class:`ConfigError` (key ``status.socket``) for a symlink, a folder owned by another
    uid, one writable by group/others, or a parent another user could replace it in.
    """
    folder = path.parent
    if not this_os().posix_files:  # Windows: no uids or modes; the user's profile folder is private
        folder.mkdir(parents=True, exist_ok=True)
        return
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent = folder.parent.stat()
    if parent.st_uid not in (0, this_os().uid()) or (parent.st_mode & 0o002 and not parent.st_mode & stat.S_ISVTX):
        raise _refuse(
            f"{folder.parent} may be changed by another user, who could swap {folder.name} for their own",
            "put the socket below a folder only you (or root) control",
        )
    created = False
    try:
        os.mkdir(folder, 0o700)
        created = True
    except FileExistsError:
        pass
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            _check_folder(folder, folder.lstat(), gid, managed=False)  # raises: symlink / not a folder
        raise _refuse(f"cannot open {folder}: {exc.strerror}", "check the folder's permissions") from exc
    try:
        info = os.fstat(fd)
        managed = created or folder.name == MANAGED_NAME
        if created:
            info = _fix_mode(fd, info, gid)
        _check_folder(folder, info, gid, managed)
        if managed:
            _fix_mode(fd, info, gid)
    finally:
        os.close(fd)


def _fix_mode(fd: int, info: os.stat_result, gid: int | None) -> os.stat_result:
    if gid is not None and info.st_gid != gid:
        os.fchown(fd, -1, gid)
    want = 0o750 if gid is not None else 0o700
    if stat.S_IMODE(info.st_mode) != want:
        os.fchmod(fd, want)
    return os.fstat(fd)


class InstanceLock:
    """One ``run`` per socket: an exclusive lock on ``<socket>.lock``, opened without following
    a symlink (:meth:`~lmsupervisor.platform.base.OsPlatform.open_lock` and ``try_lock``:
    ``flock`` on Unix, ``msvcrt.locking`` on Windows).

    :meth:`acquire` raises :class:`InstanceLockedError` (exit 69) when another process holds
    it, :class:`ConfigError` (exit 78) when the lock path is a symlink.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Open ``<socket>.lock`` (0600, not following a symlink) and take a non-blocking
        exclusive lock on it.

        Raises :class:`InstanceLockedError` when another process holds it and
        :class:`ConfigError` (key ``status.socket``) when the path is a symlink or cannot
        be opened.
        """
        system = this_os()
        try:
            fd = system.open_lock(str(self.path))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse(f"{self.path} is a symlink", f"remove {self.path}") from exc
            raise _refuse(f"cannot open {self.path}: {exc.strerror}", "check the folder's permissions") from exc
        if not system.try_lock(fd):
            os.close(fd)
            raise InstanceLockedError(
                f"another instance is running for {self.path.with_suffix('')} (lock {self.path})",
                hint="stop it first, or give this one another status.socket",
            ) from None
        self._fd = fd

    def ensure(self) -> bool:
        """Take the lock again if its file was deleted or replaced (a tmp cleaner); True if it was."""
        if self._fd is None:
            return False
        try:
            now = self.path.lstat()
        except FileNotFoundError:
            now = None
        held = os.fstat(self._fd)
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return False
        old, self._fd = self._fd, None
        try:
            self.acquire()
        except (InstanceLockedError, ConfigError):
            self._fd = old  # keep what we hold; the socket check will say the rest
            return False
        os.close(old)
        return True

    def release(self) -> None:
        """Close the lock file, which drops the lock; the file stays. Safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
