"""What a configuration change means (pure): ``config_diff(old, new) -> ConfigDiff``.

The reducer applies a diff at once where the state allows, and otherwise holds the new
config until the next stable point (design §6, "reload in any state").
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lmsupervisor.config import Config, ModelConfig


@dataclass(frozen=True)
class ConfigDiff:
    """The consequences of replacing one config by another.

    ``restart_server``: a server setting LM Studio runs with (bind, port, CORS) or where
    LM Studio is (``lmstudio.home``, ``lmstudio.lms``) changed; the API token applies at the
    next request by itself. ``reconcile_models``: ``[[models]]`` changed;
    ``added``/``removed`` name models by identifier (else key), ``rekeyed`` the names whose
    model key changed under the same identifier. ``relog``: ``[log]`` changed (applied
    live). ``needs_restart``: keys that only a restart of lmsupervisor applies
    (:data:`AT_START`: ``status.*``, ``proxy.listen``, ``metrics.*``, ``dashboard.listen``).
    """

    restart_server: bool = False
    reconcile_models: bool = False
    relog: bool = False
    needs_restart: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    rekeyed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to do (timing keys such as ``[health]`` apply by themselves)."""
        return not (self.restart_server or self.reconcile_models or self.relog or self.needs_restart)


# The keys `run` reads once, at start, by section (None: every key of it): the status
# socket, and the listeners of the proxy, the metrics port (its TLS context and users file
# too) and the dashboard. The proxy's hold_timeout, keepalive and resend_unanswered are
# read per request; [[notify]] is re-read by its runner at each reload.
AT_START: dict[str, tuple[str, ...] | None] = {
    "status": None,
    "proxy": ("listen",),
    "metrics": None,
    "dashboard": ("listen",),
}


def model_name(model: ModelConfig) -> str:
    """How a declared model is named in the status: its identifier, else its key."""
    return model.identifier or model.key


def config_diff(old: Config, new: Config) -> ConfigDiff:
    """Compare two configs; see :class:`ConfigDiff` for what each field means."""
    server = ("bind", "port", "cors")
    where = ("home", "lms")
    restart_server = any(getattr(old.lmstudio, k) != getattr(new.lmstudio, k) for k in where) or any(
        getattr(old.server, k) != getattr(new.server, k) for k in server
    )
    before = {model_name(m): m for m in old.models}
    after = {model_name(m): m for m in new.models}
    added = tuple(n for n in after if n not in before)
    removed = tuple(n for n in before if n not in after)
    rekeyed = tuple(n for n in after if n in before and before[n].key != after[n].key)
    needs_restart = tuple(
        f"{section}.{f.name}"
        for section, keys in AT_START.items()
        for f in fields(getattr(old, section))
        if (keys is None or f.name in keys)
        and getattr(getattr(old, section), f.name) != getattr(getattr(new, section), f.name)
    )
    return ConfigDiff(
        restart_server=restart_server,
        reconcile_models=old.models != new.models,
        relog=old.log != new.log,
        needs_restart=needs_restart,
        added=added,
        removed=removed,
        rekeyed=rekeyed,
    )
