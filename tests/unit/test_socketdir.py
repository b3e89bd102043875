"""The socket folder, group and lock: refused when someone else could control them (issue 7)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs
import pytest

from lmsupervisor import paths
from lmsupervisor.errors import ConfigError, InstanceLockedError
from lmsupervisor.statusd.socketdir import InstanceLock, check_socket_path, prepare_socket_dir, resolve_group

NOGROUP = 65534


def test_a_fresh_folder_is_private(tmp_path: Path) -> None:
    """Created 0700 without a group, 0750 owned by the group with one."""
    prepare_socket_dir(tmp_path / "a" / "s.sock")
    prepare_socket_dir(tmp_path / "b" / "s.sock", NOGROUP)
    a, b = (tmp_path / "a").stat(), (tmp_path / "b").stat()
    assert (oct(a.st_mode & 0o777), oct(b.st_mode & 0o777), b.st_gid) == ("0o700", "0o750", NOGROUP)


def test_a_symlinked_folder_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """A planted symlink is never followed: refused, the target keeps its mode."""
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    (tmp_path / "lmsupervisor").symlink_to(target)
    with pytest.raises(ConfigError, match="is a symlink") as err:
        prepare_socket_dir(tmp_path / "lmsupervisor" / "s.sock")
    assert (err.value.key, oct(target.stat().st_mode & 0o777)) == ("status.socket", "0o755")


def test_a_folder_owned_by_another_uid_is_refused(tmp_path: Path) -> None:
    """A folder pre-created by another user is refused with the fix, not chmod'ed."""
    folder = tmp_path / "lmsupervisor"
    folder.mkdir(mode=0o755)
    os.chown(folder, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        prepare_socket_dir(folder / "s.sock")
    assert oct(folder.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_folder_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A socket in a group- or world-writable folder could be replaced: refused with the fix."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(ConfigError, match="writable by") as err:
        prepare_socket_dir(folder / "s.sock")
    assert "chmod go-w" in err.value.hint
    with pytest.raises(ConfigError, match="writable by"):
        check_socket_path(folder / "s.sock")


def test_a_file_at_the_socket_path_is_a_config_error(tmp_path: Path) -> None:
    """A path that exists and is not a socket is 78 (status.socket), not 'another instance'."""
    (tmp_path / "s.sock").write_text("")
    with pytest.raises(ConfigError, match="not a socket") as err:
        check_socket_path(tmp_path / "s.sock")
    assert err.value.key == "status.socket"


def test_a_missing_group_names_the_key() -> None:
    """An unknown status.group is a ConfigError naming the key, not a KeyError."""
    with pytest.raises(ConfigError, match=r"status\.group") as err:
        resolve_group("no-such-group-here")
    assert (err.value.key, resolve_group("nogroup"), resolve_group("")) == ("status.group", NOGROUP, None)


def test_the_lock_is_exclusive_and_never_follows_a_symlink(tmp_path: Path) -> None:
    """A second holder gets InstanceLockedError; a symlink at the lock path is refused, its target untouched."""
    first = InstanceLock(tmp_path / "s.sock.lock")
    first.acquire()
    with pytest.raises(InstanceLockedError, match="another instance"):
        InstanceLock(tmp_path / "s.sock.lock").acquire()
    (tmp_path / "s.sock.lock").unlink()  # a tmp cleaner
    assert first.ensure() is True
    with pytest.raises(InstanceLockedError):
        InstanceLock(tmp_path / "s.sock.lock").acquire()
    first.release()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "x.lock").symlink_to(victim)
    with pytest.raises(ConfigError, match="symlink"):
        InstanceLock(tmp_path / "x.lock").acquire()
    assert victim.read_text() == "keep"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux rule")
def test_default_socket_is_never_a_shared_tmp_name() -> None:
    """Without XDG_RUNTIME_DIR the socket goes to the per-user state folder platformdirs names."""
    env = {"HOME": "/home/alice"}
    monkey = pytest.MonkeyPatch()
    monkey.setenv("HOME", "/home/alice")
    monkey.delenv("XDG_STATE_HOME", raising=False)
    try:
        expected = os.path.join(platformdirs.user_state_dir("lmsupervisor", appauthor=False), "status.sock")
    finally:
        monkey.undo()
    assert paths.default_socket(env) == expected == "/home/alice/.local/state/lmsupervisor/status.sock"
    assert paths.default_socket({"XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7/lmsupervisor/status.sock"
