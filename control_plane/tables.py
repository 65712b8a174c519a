"""The fleet database: what the centre knows of every site, host, worker, queue, run, stage and cost, and its alerts.

Every replicated table is keyed by ``site_id`` first (two sites may name a worker or a queue
alike) and carries the site's ``tenant_id`` where the site has one; ``replicated_seq`` is the
outbox event that last wrote the row and ``updated_at`` the centre's clock when it did. The
indexes serve the API's filters (status, site, tenant, project, submitted date) and its keyset
pagination on ``(submitted_at, site_id, run_id)``.

The alert tables (alerts, their delivery outbox, every delivery attempt, silences) are here too, so
that the one metadata the migrations are checked against holds them. Notifications are written in
the same transaction as the alert change that causes them: a restarted emitter finds what it still
owes in ``alert_notifications`` (status ``pending``) and neither loses a resolve nor sends one twice.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    # Every mapped class is declared with __tablename__, so its __table__ is a Table.
    __table__: ClassVar[Table]


class SiteRow(Base):
    """A site as replication knows it: the cursor is the last outbox seq applied, in order, exactly once."""

    __tablename__ = "sites"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen_at: Mapped[float] = mapped_column(Float)
    last_push_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: sha256 of the site's push token (``control site add``); None: the site cannot push with a token.
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The site's newest seq as of its last push: the backlog is ``site_head - cursor``.
    site_head: Mapped[int] = mapped_column(BigInteger, default=0)
    applied_total: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The site's commit time of the newest applied event, and now minus it when it was applied.
    newest_committed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    lag_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: An exponentially decaying event rate (time constant ``ingest.RATE_TAU_S``) as of ``rate_at``.
    events_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    rate_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_submitted", "submitted_at", "site_id", "run_id"),
        Index("ix_runs_tenant_submitted", "tenant_id", "submitted_at", "site_id", "run_id"),
        Index("ix_runs_status_submitted", "status", "submitted_at"),
        Index("ix_runs_site_submitted", "site_id", "submitted_at"),
        Index("ix_runs_project", "project_hash"),
    )

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_path: Mapped[str] = mapped_column(Text)
    project_hash: Mapped[str] = mapped_column(String(64))
    out_dir: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    episode: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_seq: Mapped[int] = mapped_column(Integer)
    #: The site's submission time; the event's commit time when the site had none (never NULL: keyset pages).
    submitted_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    replicated_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class StageRow(Base):
    __tablename__ = "stages"
    __table_args__ = (Index("ix_stages_status", "status"), Index("ix_stages_tenant", "tenant_id"),
                      # the dashboard's jobs per hour: the last hour's finished stages, an index range
                      Index("ix_stages_status_updated", "status", "updated_at"))

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))
    identity: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    depends_on: Mapped[list[str]] = mapped_column(JSON)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    cache_hits: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cache_misses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    replicated_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class WorkerRow(Base):
    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_host", "site_id", "host"), Index("ix_workers_status", "status"))

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    queues: Mapped[list[str]] = mapped_column(JSON)
    current_job: Mapped[str | None] = mapped_column(String(160), nullable=True)
    since: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The ffmpeg and espeak-ng builds the worker reported, and why it takes no media work (they differ
    #: from the site's pinned builds); None from sites that do not say.
    builds: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    refused: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: When the worker's drain requeues what it still runs (unix seconds); None without a deadline.
    drain_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    replicated_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class QueueRow(Base):
    __tablename__ = "queues"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean)
    completed: Mapped[int] = mapped_column(Integer)
    replicated_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class SiteHostRow(Base):
    """A host as its site marks it (``mark-host``: healthy, degraded, offline): replicated, not reported."""

    __tablename__ = "site_hosts"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    replicated_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_kind", "kind"),)

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    schema_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    parents: Mapped[list[str]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    compute_origin: Mapped[str] = mapped_column(String(16))
    license: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[str] = mapped_column(String(40))  # the site's ISO 8601 text, as replicated
    replicated_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class CostRow(Base):
    """What one attempt of a stage cost (an outbox ``cost`` event; inserted once, never changed)."""

    __tablename__ = "costs"
    __table_args__ = (Index("ix_costs_tenant_committed", "tenant_id", "committed_at"),)

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    origin: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(64))
    compute_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    usd: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    committed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    replicated_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class HostRow(Base):
    """A host as its agent last reported it (``ReportHealth``); its state at the centre is derived on read."""

    __tablename__ = "hosts"
    __table_args__ = (Index("ix_hosts_last_report", "last_report_at"),)

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(128), primary_key=True)
    agent_address: Mapped[str] = mapped_column(String(255))
    agent_tls: Mapped[bool] = mapped_column(Boolean)
    interval_s: Mapped[float] = mapped_column(Float)
    #: The agent's own verdict: healthy, degraded or offline, and why when not healthy.
    reported_state: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[str]] = mapped_column(JSON)
    first_seen_at: Mapped[float] = mapped_column(Float)
    last_report_at: Mapped[float] = mapped_column(Float)  # the centre's clock
    sampled_at: Mapped[float] = mapped_column(Float)  # the agent's clock
    load_1m: Mapped[float] = mapped_column(Float)
    load_5m: Mapped[float] = mapped_column(Float)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_used_bytes: Mapped[int] = mapped_column(BigInteger)
    memory_total_bytes: Mapped[int] = mapped_column(BigInteger)
    disks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    temperatures: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    workers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    trusted_key_ids: Mapped[list[str]] = mapped_column(JSON)
    trust_bundle_version: Mapped[int] = mapped_column(BigInteger)
    trust_problem: Mapped[str] = mapped_column(Text)
    #: When this host's history was last trimmed to its bound.
    pruned_at: Mapped[float] = mapped_column(Float)


class HostSampleRow(Base):
    """One report of a host, for graphs; each host keeps a bounded window (``health.HISTORY_S``)."""

    __tablename__ = "host_samples"
    __table_args__ = (Index("ix_host_samples_host_time", "site_id", "host", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    load_1m: Mapped[float] = mapped_column(Float)
    memory_used_bytes: Mapped[int] = mapped_column(BigInteger)
    memory_total_bytes: Mapped[int] = mapped_column(BigInteger)
    disk_used_fraction: Mapped[float] = mapped_column(Float)  # the fullest volume
    workers_busy: Mapped[int] = mapped_column(Integer)


class UserRow(Base):
    """A person (or program) who may use the centre: a role, and the tenants it is limited to (NULL: all)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    #: Canonical JSON list of tenant ids, or NULL for every tenant.
    tenants: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class TokenRow(Base):
    """An API token: only its sha256 is kept; ``token_id`` is the public handle that revokes it."""

    __tablename__ = "tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), ForeignKey("users.name"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class CommandRow(Base):
    """An operator's command from request to outcome; the signer reads it to decide what it may sign."""

    __tablename__ = "commands"

    command_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    #: The tenant whose run the command acts on; NULL for site-wide targets (workers, queues).
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(32))
    #: Canonical JSON list of the target's ids, in ``protos.actions`` order.
    target: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(64))
    requester_role: Mapped[str] = mapped_column(String(16))
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approver: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    address: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: The serialized SignedCommand the signer produced (public: it holds no secret).
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    payload_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    updated_at: Mapped[float] = mapped_column(Float)
    approved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    signed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    dispatched_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditRow(Base):
    """One link of the hash chain: ``hash`` = sha256 over the canonical bytes of every other field."""

    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24), index=True)
    subject: Mapped[str] = mapped_column(String(256), index=True)
    #: Canonical JSON (sorted keys, no spaces): hashed as stored.
    detail: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The chain's one head row: every append locks it first, so appends are serialized and never fork."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    """A signed statement "the chain had reached ``seq`` with ``hash``": cutting the tail off is then detected."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    key_id: Mapped[str] = mapped_column(String(64))
    #: The raw public key, base64 (informative: ``audit verify --key`` checks against the signer's own file).
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class WebSessionRow(Base):
    """A dashboard sign-in: the sha256 of its cookie, whose token opened it, its CSRF secret and its clock.

    It ends at ``expires_at``, after an idle gap longer than the dashboard's idle timeout since
    ``seen_at``, at logout (the row is deleted), or when its token is revoked or its user disabled.
    """

    __tablename__ = "web_sessions"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), ForeignKey("users.name"), index=True)
    token_id: Mapped[str] = mapped_column(String(32), ForeignKey("tokens.token_id"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    #: When the session last served a request (written at most once a minute).
    seen_at: Mapped[float] = mapped_column(Float)


# -- alerts (control_plane.alerts) ----------------------------------------------------------------

_ID = BigInteger().with_variant(Integer, "sqlite")


class AlertRow(Base):
    """One alert: a condition of the fleet under its dedup key, from first sight to resolution."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_key", "key"), Index("ix_alerts_status", "status"),
                      Index("ix_alerts_last_seen", "last_seen"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    #: type + site + run + stage, or type + site + host (+ volume): repeats of one key are one alert.
    key: Mapped[str] = mapped_column(String(512))
    alert_type: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    #: pending | firing | acked | silenced | resolved
    status: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stage: Mapped[str | None] = mapped_column(String(128), nullable=True)
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    summary: Mapped[str] = mapped_column(Text)
    #: The dashboard path that explains it (``/runs/SITE/RUN``, ``/hosts/SITE/HOST``, ``/``).
    link: Mapped[str] = mapped_column(String(512))
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    #: What made the last repeat distinct (a replicated seq, an attempt number): equal tokens are one event.
    occurrence: Mapped[str] = mapped_column(String(128))
    #: When the current episode began (a reopened alert starts a new one): the flap wait counts from here.
    opened_at: Mapped[float] = mapped_column(Float)
    notified_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)
    #: Why it sends nothing now (a silence, a maintenance window, an inhibiting alert); "" when it may send.
    muted: Mapped[str] = mapped_column(Text, default="")
    acked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    acked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class NotificationRow(Base):
    """The delivery outbox: one message for one receiver; ``pending`` until its last attempt is recorded."""

    __tablename__ = "alert_notifications"
    __table_args__ = (Index("ix_alert_notifications_status", "status"),
                      Index("ix_alert_notifications_alert", "alert_id"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    #: None for ``alerts test`` messages, which belong to no alert.
    alert_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    receiver: Mapped[str] = mapped_column(String(64))
    #: firing | escalation | resolved | test
    event: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    click_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    ack_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: pending | sent | failed
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AttemptRow(Base):
    """One delivery attempt as the Deliverer reported it (secrets already redacted from ``url``/``error``)."""

    __tablename__ = "alert_attempts"
    __table_args__ = (Index("ix_alert_attempts_notification", "notification_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(BigInteger)
    alert_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    receiver: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text)
    final: Mapped[bool] = mapped_column(Boolean)


class SilenceRow(Base):
    """Alerts matching every matcher send nothing between ``starts_at`` and ``ends_at``; who and why are kept."""

    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    #: field -> value, fields of :data:`control_plane.alerts.silences.MATCH_FIELDS`.
    matchers: Mapped[dict[str, Any]] = mapped_column(JSON)
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    removed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    removed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LeaseRow(Base):
    """Who may send: the row named ``emitter`` is the lease, each ``standby …`` row a waiting emitter.

    Only the lease's holder sends, escalates and resolves. It renews ``expires_at`` in every tick's own
    transaction with a conditional UPDATE (taken when expired or already ours), which both SQLite and
    PostgreSQL serialize, so two ``alerts serve`` on one database never both send; a standby takes over
    once the holder stops renewing. ``host``/``pid`` are for people reading ``alerts list``.
    """

    __tablename__ = "alert_lease"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class CostDayRow(Base):
    """One run's costs committed in one UTC day, summed: the cost page reads these, not every attempt.

    Written by the ingest in the same transaction as the cost rows it sums, recomputed from them for
    each run a batch touches, so it equals the raw rows whatever was replayed; costs without a commit
    time are in no day (no window shows them either).
    """

    __tablename__ = "cost_days"
    __table_args__ = (Index("ix_cost_days_day_tenant", "day", "tenant_id"),)

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Whole UTC days since the epoch of the attempts' commit times.
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    compute_s: Mapped[float] = mapped_column(Float)
    usd: Mapped[float] = mapped_column(Float)


# The dashboard's indexes of migration 0007 on tables declared above (kept here, after them, so the
# metadata the migrations are checked against holds them):
#: the queues page's live stages per site and queue, counted in the index alone;
Index("ix_stages_status_site_queue", StageRow.status, StageRow.site_id, StageRow.queue)
#: the lineage page's other runs of the same project at a site, newest first: a seek, not a walk.
Index("ix_runs_site_project", RunRow.site_id, RunRow.project_path, RunRow.submitted_at)
