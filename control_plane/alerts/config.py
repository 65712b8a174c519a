"""The alert emitter's configuration: types and thresholds, routes, receivers, escalation, quiet times.

Read from YAML and validated once at start with pydantic: a bad file stops ``alerts serve``
before it sends anything, with an error naming the file, the LINE, the field, the value and what
was expected. Without a file the embedded defaults apply (every type at its default severity,
no receivers: alerts are recorded and listed but sent nowhere), so the emitter always runs.
Durations are seconds, or text such as ``30s``, ``5m``, ``1h``, ``2d``.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import apprise
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from control_plane.errors import ControlInputError

SEVERITIES = ("critical", "warning", "info")
#: Every alert type, its default severity, and its default threshold (None: the type has none).
#: excessive_retries counts attempts; disk_full is a fraction of a volume (None: the agent's own
#: high-water mark); replication_lagging is seconds of lag or events of backlog (``backlog``).
DEFAULTS: dict[str, tuple[str, float | None]] = {
    "job_failed": ("warning", None),
    "excessive_retries": ("warning", 3),
    "provider_unavailable": ("critical", 3),
    "budget_exceeded": ("warning", None),
    "canon_blocked": ("warning", None),
    "host_down": ("critical", None),
    "disk_full": ("warning", None),
    "site_disconnected": ("critical", None),
    "replication_lagging": ("warning", 120),
}
ALERT_TYPES = tuple(DEFAULTS)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ControlInputError):
    """Raised for a configuration file that cannot be used; the message names file, line, field and value."""


def seconds(value: Any) -> Any:
    """Seconds from a number or from text like ``5m``; anything else is left for pydantic to refuse."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if match is None:
            raise ValueError("expected seconds or a duration such as 30s, 5m, 1h, 2d")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(seconds), Field(ge=0)]
Severity = Literal["critical", "warning", "info"]
AlertType = Literal["job_failed", "excessive_retries", "provider_unavailable", "budget_exceeded", "canon_blocked",
                    "host_down", "disk_full", "site_disconnected", "replication_lagging"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TypeRule(_Strict):
    """What one type is: its severity and, for the types that have one, the threshold it fires over."""

    severity: Severity | None = None
    threshold: float | None = Field(default=None, ge=0)
    #: replication_lagging only: a backlog of more events than this also fires.
    backlog: int | None = Field(default=None, ge=0)


class ReceiverConfig(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    urls: list[str] = Field(min_length=1)
    fallback: str | None = None


class Match(_Strict):
    """A route's or a silence's matchers: an empty list matches everything."""

    type: list[AlertType] = Field(default_factory=list)
    severity: list[Severity] = Field(default_factory=list)
    site: list[str] = Field(default_factory=list)
    tenant: list[str] = Field(default_factory=list)


class Level(_Strict):
    """An escalation level: unacked this long after the previous notification, these receivers are told."""

    after: Duration
    receivers: list[str] = Field(min_length=1)


class Route(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: Match = Field(default_factory=Match)
    receivers: list[str] = Field(min_length=1)
    #: Keep looking at the routes after this one (first match wins otherwise).
    continue_: bool = Field(default=False, alias="continue")
    escalation: list[Level] = Field(default_factory=list)
    #: After the last level, repeat it at most this many times.
    repeat: int = Field(default=0, ge=0, le=100)


class Maintenance(_Strict):
    """A site's maintenance window: its alerts send nothing between start and end (ISO 8601 with a zone)."""

    site: str = Field(min_length=1)
    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Maintenance:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("expected start and end with a time zone (e.g. 2026-12-01T02:00:00Z)")
        if self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} is not after start {self.start.isoformat()}")
        return self


class Inhibit(_Strict):
    """While an alert of ``source`` fires, alerts of ``targets`` equal to it on ``equal`` send nothing."""

    source: AlertType
    targets: list[AlertType] = Field(min_length=1)
    equal: list[Literal["site", "host"]] = Field(min_length=1)


class Deadman(_Strict):
    """The dead-man heartbeat: pinged every ``interval`` so that a dead emitter is noticed elsewhere."""

    url: str = Field(pattern=r"^https?://[^/\s]+")
    interval: Annotated[float, BeforeValidator(seconds), Field(gt=0)] = 60.0
    method: Literal["GET", "POST"] = "GET"


#: host_down mutes what that host does; a disconnected site mutes its hosts being down.
DEFAULT_INHIBIT = (Inhibit(source="host_down", targets=["job_failed", "disk_full"], equal=["site", "host"]),
                   Inhibit(source="site_disconnected", targets=["host_down"], equal=["site"]))


class AlertConfig(_Strict):
    """The whole configuration; :func:`load` gives it, with defaults filled in."""

    #: The dashboards' base URL, for deep links and the ack URLs (the web process serves ``/ack/...``).
    public_url: str = "http://127.0.0.1:50180"
    tick: Duration = 0.5
    dedup_window: Duration = 300.0
    #: How long a warning-level alert must hold before it is sent (critical ones go at once).
    flap_wait: Duration = 30.0
    ack_ttl: Duration = 86400.0
    #: The ack URLs' HMAC key; default ``CONTROL_DIR/alert-ack.key``, made on first start.
    ack_key_file: Path | None = None
    #: A site heard from neither by push nor by host report for this long is disconnected (as ``control serve
    #: --site-timeout``); hosts are judged on the interval each agent reports with.
    site_timeout: Duration = 15.0
    #: How long the sending emitter's lease lasts unrenewed (it renews every tick): a standby ``alerts serve``
    #: on the same database takes over within this long after the holder dies.
    lease: Duration = 10.0
    types: dict[AlertType, TypeRule] = Field(default_factory=dict)
    #: Per tenant, the most USD its runs may spend in 24 hours (budget_exceeded).
    budgets: dict[str, float] = Field(default_factory=dict)
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    maintenance: list[Maintenance] = Field(default_factory=list)
    inhibit: list[Inhibit] = Field(default_factory=lambda: list(DEFAULT_INHIBIT))
    deadman: Deadman | None = None

    @model_validator(mode="after")
    def _references(self) -> AlertConfig:
        if self.lease < 2 * self.tick:
            raise _Located(("lease",), self.lease, f"at least two ticks ({2 * self.tick:g} s): renewed once a tick")
        names = [r.name for r in self.receivers]
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                raise _Located(("receivers", index, "name"), name, "a receiver name used once")
            seen.add(name)
        for index, receiver in enumerate(self.receivers):
            for position, url in enumerate(receiver.urls):
                if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
                    scheme = url.split("://", 1)[0] if "://" in url else "(none)"
                    raise _Located(("receivers", index, "urls", position), f"{scheme}://...",
                                   "an apprise URL such as ntfy://host/topic, json://host/path, pover://user@token")
            if receiver.fallback is not None and receiver.fallback not in seen | {None}:
                raise _Located(("receivers", index, "fallback"), receiver.fallback, "the name of a receiver")
            if receiver.fallback == receiver.name:
                raise _Located(("receivers", index, "fallback"), receiver.fallback, "another receiver's name")
        for index, route in enumerate(self.routes):
            for position, name in enumerate(route.receivers):
                if name not in seen:
                    raise _Located(("routes", index, "receivers", position), name, "the name of a receiver")
            for number, level in enumerate(route.escalation):
                for position, name in enumerate(level.receivers):
                    if name not in seen:
                        raise _Located(("routes", index, "escalation", number, "receivers", position), name,
                                       "the name of a receiver")
        if not self.public_url.startswith(("http://", "https://")):
            raise _Located(("public_url",), self.public_url, "an http:// or https:// URL")
        return self

    def severity(self, alert_type: str) -> str:
        rule = self.types.get(alert_type)  # type: ignore[call-overload]
        return (rule.severity if rule and rule.severity else None) or DEFAULTS[alert_type][0]

    def threshold(self, alert_type: str) -> float | None:
        rule = self.types.get(alert_type)  # type: ignore[call-overload]
        return rule.threshold if rule is not None and rule.threshold is not None else DEFAULTS[alert_type][1]

    def backlog(self) -> int | None:
        rule = self.types.get("replication_lagging")
        return rule.backlog if rule is not None else None

    def receiver(self, name: str) -> ReceiverConfig:
        for receiver in self.receivers:
            if receiver.name == name:
                return receiver
        raise ConfigError(f"receiver {name!r}: not in the configuration (known: "
                          f"{', '.join(r.name for r in self.receivers) or 'none'})")

    def link(self, path: str) -> str:
        return self.public_url.rstrip("/") + path


class _Located(ValueError):
    """A cross-field problem, with the path of the field it is about (so the error can name its line)."""

    def __init__(self, loc: tuple[str | int, ...], value: Any, expected: str) -> None:
        super().__init__(f"expected {expected}")
        self.loc, self.value, self.expected = loc, value, expected


def _line(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the deepest node ``loc`` reaches in the composed YAML."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                         None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse(text: str, source: str = "<config>") -> AlertConfig:
    """Validate ``text`` (YAML); raises :class:`ConfigError` naming ``source``, line, field, value, expectation."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "line ?"
        raise ConfigError(f"{source}: {where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: line 1: (top level): value {type(data).__name__}: expected a mapping of "
                          "settings")
    try:
        return AlertConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _Located):
            loc, value, message = cause.loc, cause.value, f"expected {cause.expected}"
        else:
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal"))))
            value, message = error.get("input"), error["msg"]
        shown = "(missing)" if error["type"] == "missing" else repr(value)[:200]
        raise ConfigError(f"{source}: line {_line(root, loc) or '?'}: {_field(loc)}: value {shown}: "
                          f"{message}") from None


def load(path: Path | None) -> AlertConfig:
    """The configuration in ``path``, or the embedded defaults when None."""
    if path is None:
        return AlertConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); expected a YAML alert configuration") from None
    return parse(text, str(path))
