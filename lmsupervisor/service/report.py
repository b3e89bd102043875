"""Human renderings of a service's state, for `service status` and `doctor`. Pure."""

from __future__ import annotations

from lmsupervisor.service.install import UnitState

MANAGERS = {"systemd": "systemd", "launchd": "launchd", "schtasks": "Task Scheduler"}


def describe(st: UnitState) -> str:
    """``systemd lmsupervisor.service: active (running), enabled, PID 42``."""
    parts = [st.state]
    if st.enabled is not None:
        parts.append("enabled" if st.enabled else "not enabled")
    if st.main_pid:
        parts.append(f"PID {st.main_pid}")
    return f"{MANAGERS.get(st.manager, st.manager)} {st.unit}: {', '.join(parts)}"


def boot_line(st: UnitState) -> str:
    """Whether the unit starts before anyone logs in, and how to make it so."""
    if st.before_login:
        return "yes, at boot" + (" (lingering on)" if st.linger else "")
    if st.linger is False:
        return f"no, at first login (lingering off: `{st.linger_fix}` starts it at boot)"
    if st.before_login is None:
        return f"at boot only with lingering (`{st.linger_fix}`), else at first login; logind did not answer"
    return "no, at login (install with --system to start it at boot)"


def rows(st: UnitState) -> list[tuple[str, str]]:
    """Label/value rows for one unit."""
    out = [("lmsupervisor", describe(st))]
    if st.error:
        out.append(("manager", st.error))
    restarts = [] if st.restarts is None else [f"{st.restarts} restarts"]
    if st.last_exit:
        restarts.append(f"last exit: {st.last_exit}")
    if restarts:
        out.append(("restarts", ", ".join(restarts)))
    out.append(("before login", boot_line(st)))
    if st.status_text:
        out.append(("unit status", st.status_text))
    return out
