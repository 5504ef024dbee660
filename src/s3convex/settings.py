"""Configuration from the environment (and an optional ``.env``), by concern, validated once.

Each concern is its own settings class, and each module takes only the part it needs::

    AwsSettings        where the objects are: endpoint, region, bucket, key layout, bucket setup
    SqsSettings        the notification queue and its dead-letter queue
    ConvexSettings     the deployment and its deploy key
    ConsumerSettings   the daemon's tuning and its probes
    UrlSettings        stored URLs (public or presigned) and the lifetimes handed out
    TelemetrySettings  logging
    UploadSettings     the producer's uploads (``S3Storage``, ``s3convex upload``)

:class:`Settings` composes all seven. Every field is read from the environment variable its alias
names (case-insensitive), the names the README documents. A missing or invalid value is reported
by :func:`load_settings` / :func:`load` as one line naming the variable and what is allowed; the
CLI prints it and exits 2. Credentials are never read here: they come from the AWS chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from s3convex.core.errors import ConfigError
from s3convex.core.layout import DEFAULT_LAYOUT, KeyLayout

# S3's bucket naming rules (general purpose buckets): 3-63 chars, lowercase, digits, dots, hyphens.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
SEVEN_DAYS = 7 * 24 * 3600
MiB = 1024 * 1024
GiB = 1024 * MiB
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": MiB, "mb": 1000**2,
               "mib": MiB, "g": GiB, "gb": 1000**3, "gib": GiB}
_CORS_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"})

PositiveInt = Annotated[int, Field(gt=0)]


def env(name: str, default: Any = ..., **constraints: Any) -> Any:
    """A field read from the environment variable ``name``."""
    return Field(default, validation_alias=name, **constraints)


class _Part(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        populate_by_name=True, frozen=True,
    )

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field name → the environment variable it is read from."""
        return {name: str(info.validation_alias) for name, info in cls.model_fields.items()}

    def as_environment(self) -> dict[str, Any]:
        """Variable → value as JSON would show it (secrets masked), for ``s3convex config``."""
        dumped = self.model_dump(mode="json")
        return {self.variables()[name]: value for name, value in dumped.items()}


class AwsSettings(_Part):
    """S3 (and the AWS endpoint SQS shares): where the objects are and what their keys mean."""

    endpoint: AnyHttpUrl | None = env("AWS_ENDPOINT_URL", None)
    region: str = env("AWS_REGION", "us-east-1")
    bucket: str = env("S3_BUCKET")
    notification_prefix: str = env("S3_NOTIFICATION_PREFIX", "")
    notification_suffix: str = env("S3_NOTIFICATION_SUFFIX", "")
    # What keys mean (core/layout.py): ";"-separated patterns, first match wins.
    asset_key_layout: str = env("ASSET_KEY_LAYOUT", DEFAULT_LAYOUT)
    # Bucket settings applied by `infra up`.
    cors_origins: str = env("S3_CORS_ALLOWED_ORIGINS", "")  # comma-separated; empty: CORS untouched
    cors_methods: str = env("S3_CORS_ALLOWED_METHODS", "GET,HEAD")
    cors_max_age: int = env("S3_CORS_MAX_AGE", 3600, ge=0, le=86_400)
    kms_key_id: str | None = env("S3_KMS_KEY_ID", None)  # set: default SSE-KMS with this key
    # S3 lifecycle rules `infra up` keeps (infra/lifecycle.py), in days; 0 removes that rule,
    # both 0 leave the bucket's lifecycle unmanaged. NoncurrentVersionExpiration: versioned only.
    abort_multipart_days: int = env("S3_ABORT_MULTIPART_DAYS", 7, ge=0, le=3650)
    noncurrent_version_days: int = env("S3_NONCURRENT_VERSION_DAYS", 30, ge=0, le=3650)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET_RE.match(value) or ".." in value:
            raise ValueError("must be an S3 bucket name: 3-63 of a-z 0-9 . -")
        return value

    @field_validator("asset_key_layout")
    @classmethod
    def _layout_parses(cls, value: str) -> str:
        return KeyLayout.parse(value).spec

    @field_validator("cors_methods")
    @classmethod
    def _cors_methods(cls, value: str) -> str:
        methods = _comma_list(value.upper())
        unknown = sorted(set(methods) - _CORS_METHODS)
        if unknown or not methods:
            raise ValueError(f"must be a comma-separated list of {', '.join(sorted(_CORS_METHODS))}")
        return ",".join(methods)

    @field_validator("kms_key_id")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def endpoint_url(self) -> str | None:
        """The AWS endpoint as botocore wants it (no trailing slash), or None for real AWS."""
        return str(self.endpoint).rstrip("/") if self.endpoint else None

    @property
    def key_layout(self) -> KeyLayout:
        return KeyLayout.parse(self.asset_key_layout)

    @property
    def cors_allowed_origins(self) -> tuple[str, ...]:
        return tuple(_comma_list(self.cors_origins))

    @property
    def cors_allowed_methods(self) -> tuple[str, ...]:
        return tuple(_comma_list(self.cors_methods))


class SqsSettings(_Part):
    """The notification queue and its dead-letter queue."""

    queue_name: str = env("SQS_QUEUE_NAME", "s3convex-events")
    queue_url: AnyHttpUrl | None = env("SQS_QUEUE_URL", None)
    dlq_name: str = env("SQS_DLQ_NAME", "s3convex-events-dlq")
    max_receive_count: int = env("SQS_MAX_RECEIVE_COUNT", 5, ge=1, le=1000)
    visibility_timeout: int = env("SQS_VISIBILITY_TIMEOUT", 60, ge=1, le=43200)

    @field_validator("queue_name", "dlq_name")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if not _QUEUE_RE.match(value):
            raise ValueError("must be an SQS queue name: 1-80 of A-Z a-z 0-9 _ -")
        return value

    @model_validator(mode="after")
    def _distinct_queues(self) -> SqsSettings:
        if self.queue_name == self.dlq_name:
            raise ValueError("SQS_DLQ_NAME must differ from SQS_QUEUE_NAME")
        return self


class ConvexSettings(_Part):
    """The Convex deployment; the deploy key may call internal functions and is never logged."""

    url: AnyHttpUrl = env("CONVEX_URL")
    deploy_key: SecretStr = env("CONVEX_DEPLOY_KEY")
    timeout: float = env("CONVEX_TIMEOUT", 10.0, gt=0, le=300)

    @field_validator("deploy_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @property
    def base_url(self) -> str:
        return str(self.url).rstrip("/")


class ConsumerSettings(_Part):
    """The daemon's tuning (README, "Configuration")."""

    pollers: PositiveInt = env("CONSUMER_POLLERS", 4)
    max_in_flight: PositiveInt = env("CONSUMER_MAX_IN_FLIGHT", 500)
    flush_events: int = env("CONSUMER_FLUSH_EVENTS", 200, ge=1, le=800)
    flush_ms: int = env("CONSUMER_FLUSH_MS", 50, ge=0, le=60_000)
    # Flush a batch as soon as no received message is still on its way to it (its HeadObject),
    # instead of lingering CONSUMER_FLUSH_MS for events not coming —
    # yet never sooner than CONSUMER_FLUSH_MS after the previous flush: a lone upload lands
    # ~50 ms sooner, a steady flow is batched as before (bench/README.md).
    flush_when_idle: bool = env("CONSUMER_FLUSH_WHEN_IDLE", True)
    max_concurrent_flushes: int = env("CONSUMER_MAX_CONCURRENT_FLUSHES", 8, ge=1, le=16)
    head_concurrency: PositiveInt = env("CONSUMER_HEAD_CONCURRENCY", 32)
    # HeadObject and presigned GETs signed by botocore's signers directly (about 3x less CPU);
    # off: everything through aiobotocore.
    signed_head: bool = env("CONSUMER_SIGNED_HEAD", True)
    # How long a finished message waits for others to share its DeleteMessageBatch call (up to
    # 10 per call): at a steady 100 msg/s, 100 ms makes ~10 deletes one call instead of ~10 calls.
    delete_wait_ms: int = env("CONSUMER_DELETE_WAIT_MS", 100, ge=0, le=5_000)
    grace_seconds: float = env("CONSUMER_GRACE_SECONDS", 20.0, ge=0)
    # Long-poll wait: 10 s keeps SIGTERM → exit under ~10 s at a negligible request cost.
    wait_seconds: int = env("CONSUMER_WAIT_SECONDS", 10, ge=0, le=20)
    health_port: int | None = env("HEALTH_PORT", None, ge=0, le=65535)
    # The daemon turns `uploading` records without accepted progress for UPLOAD_STALE_AFTER
    # seconds into `failed` ("upload stalled", uploads:sweepStale), every UPLOAD_SWEEP_INTERVAL
    # seconds (consumer/upload_sweeper.py); 0: no sweep (e.g. a Convex cron does it instead).
    upload_sweep_interval: float = env("UPLOAD_SWEEP_INTERVAL", 60.0, ge=0, le=86_400)
    upload_stale_after: float = env("UPLOAD_STALE_AFTER", 600.0, ge=1, le=SEVEN_DAYS)


class CleanupSettings(_Part):
    """Lifecycle (README, "Lifecycle"; convex/LIFECYCLE.md): the cleanup worker and retention.

    The grace between a deletion and the removal from S3 is Convex's ``CLEANUP_GRACE_SECONDS``
    (the public ``sessions:delete`` fixes it with no daemon involved), not a setting here.
    """

    # The daemon's cleanup worker (consumer/cleanup.py); off: `s3convex cleanup` only.
    enabled: bool = env("CLEANUP_ENABLED", True)
    interval: float = env("CLEANUP_INTERVAL", 60.0, ge=1, le=86_400)
    # Keys per DeleteObjects call (S3 takes at most 1,000) and per Convex call.
    batch: int = env("CLEANUP_BATCH", 1000, ge=1, le=1000)
    # DeleteObjects calls in flight at once.
    concurrency: int = env("CLEANUP_CONCURRENCY", 4, ge=1, le=32)
    # After this many failed attempts a record is `cleanup_failed`; between attempts a jittered
    # exponential backoff from BASE, capped at MAX (seconds), stored on the record.
    max_attempts: int = env("CLEANUP_MAX_ATTEMPTS", 5, ge=1, le=100)
    backoff_base: float = env("CLEANUP_BACKOFF_BASE", 60.0, ge=0, le=86_400)
    backoff_max: float = env("CLEANUP_BACKOFF_MAX", 6 * 3600.0, ge=0, le=SEVEN_DAYS)
    # Retention of obsolete scene versions (R4.3): keep the current version plus this many
    # older ones, and/or drop versions last seen longer ago; unset: no policy.
    retention_keep_versions: int | None = env("RETENTION_KEEP_VERSIONS", None, ge=0, le=1000)
    retention_max_age_days: float | None = env("RETENTION_MAX_AGE_DAYS", None, gt=0, le=36_500)
    # The daemon applies the policy this often (seconds); 0: only `s3convex retention apply`.
    retention_interval: float = env("RETENTION_INTERVAL", 0.0, ge=0, le=30 * 86_400)

    @field_validator("retention_keep_versions", "retention_max_age_days", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @model_validator(mode="after")
    def _backoff_ordered(self) -> CleanupSettings:
        if self.backoff_max < self.backoff_base:
            raise ValueError("CLEANUP_BACKOFF_MAX must be at least CLEANUP_BACKOFF_BASE")
        return self


class UrlSettings(_Part):
    """The URL stored on each asset, and the lifetimes ``AssetAccess`` hands out per kind."""

    public_base_url: AnyHttpUrl | None = env("S3_PUBLIC_BASE_URL", None)
    presign_expires: int = env("S3_PRESIGN_EXPIRES", 3600, ge=1, le=SEVEN_DAYS)
    # Per kind, the longest life of a URL handed out by AssetAccess (`s3convex url get`): the
    # more sensitive the file, the shorter. Never above SigV4's 7 days.
    expires_video: int = env("URL_EXPIRES_VIDEO", 3600, ge=1, le=SEVEN_DAYS)
    expires_source: int = env("URL_EXPIRES_SOURCE", 300, ge=1, le=SEVEN_DAYS)
    expires_metadata: int = env("URL_EXPIRES_METADATA", 900, ge=1, le=SEVEN_DAYS)
    expires_manifest: int = env("URL_EXPIRES_MANIFEST", 900, ge=1, le=SEVEN_DAYS)
    expires_thumbnail: int = env("URL_EXPIRES_THUMBNAIL", 3600, ge=1, le=SEVEN_DAYS)
    expires_subtitle: int = env("URL_EXPIRES_SUBTITLE", 3600, ge=1, le=SEVEN_DAYS)
    expires_other: int = env("URL_EXPIRES_OTHER", 900, ge=1, le=SEVEN_DAYS)
    # The refresher re-signs stored URLs expiring within the margin, every interval.
    refresh_interval: int = env("URL_REFRESH_INTERVAL", 60, ge=1, le=86_400)
    refresh_margin: int = env("URL_REFRESH_MARGIN", 600, ge=1, le=SEVEN_DAYS)
    # The daemon polls Convex for the web app's URL requests (access:requestUrl) this often: one
    # small query per bucket per interval when idle. 0: the daemon does not fulfil them.
    request_poll_ms: int = env("URL_REQUEST_POLL_MS", 500, ge=0, le=60_000)

    def expires_for(self, kind: str) -> int:
        """Seconds a URL handed out for an asset of this kind may live (URL_EXPIRES_<KIND>)."""
        return min(int(getattr(self, f"expires_{kind}", self.expires_other)), SEVEN_DAYS)

    @property
    def effective_refresh_margin(self) -> int:
        """The margin actually used: at most half a stored URL's life, so a fresh URL is never
        already due for the next refresh."""
        return max(1, min(self.refresh_margin, self.presign_expires // 2))


_EXPORTERS = r"^\s*(otlp|prometheus|console|none)(\s*,\s*(otlp|prometheus|console|none))*\s*$"


class TelemetrySettings(_Part):
    """Logs, metrics, traces and the daemon's own alerts (README, "Observability").

    The OpenTelemetry SDK and exporters read the standard ``OTEL_*`` variables themselves; the
    ones named here are validated up front so a typo fails at start, naming the variable.
    """

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = env("LOG_LEVEL", "INFO")
    otlp_endpoint: AnyHttpUrl | None = env("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    # Comma-separated otlp, prometheus, console, none; unset: prometheus (+ otlp with an endpoint).
    metrics_exporter: str | None = env("OTEL_METRICS_EXPORTER", None, pattern=_EXPORTERS)
    # Queue and DLQ depth for the gauges: one GetQueueAttributes per queue per interval.
    queue_metrics_interval: float = env("QUEUE_METRICS_INTERVAL_SECONDS", 30.0, ge=1, le=3600)
    # The daemon's own alerts (consumer/alerts.py): a POST per anomaly, signed with the secret.
    alert_webhook_url: AnyHttpUrl | None = env("ALERT_WEBHOOK_URL", None)
    alert_webhook_secret: SecretStr | None = env("ALERT_WEBHOOK_SECRET", None)
    alert_lag_seconds: float = env("ALERT_LAG_SECONDS", 300.0, gt=0)
    alert_poison_per_minute: int = env("ALERT_POISON_PER_MINUTE", 10, ge=1)
    # The same alert is posted again at most this often (logged each time it is noticed).
    alert_repeat_seconds: float = env("ALERT_REPEAT_SECONDS", 900.0, ge=0)
    # At most this many webhook posts per minute, all alerts together.
    alert_max_per_minute: int = env("ALERT_MAX_PER_MINUTE", 6, ge=1)
    # How often the daemon looks for anomalies.
    alert_check_seconds: float = env("ALERT_CHECK_SECONDS", 15.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _signed_webhook(self) -> TelemetrySettings:
        if self.alert_webhook_url is not None and self.alert_webhook_secret is None:
            raise ValueError("ALERT_WEBHOOK_SECRET is required when ALERT_WEBHOOK_URL is set")
        return self


class BridgeSettings(_Part):
    """``s3convex bridge``: the HTTP endpoint MinIO's webhook target posts to (README, "MinIO
    development setup"). Not part of :class:`Settings`: only the bridge needs a token."""

    # All interfaces by default: MinIO (or a Service) reaches the pod's address, not loopback.
    host: str = env("BRIDGE_HOST", "0.0.0.0")
    port: int = env("BRIDGE_PORT", 8088, ge=0, le=65535)
    # What MinIO sends as `Authorization: Bearer <token>` (its auth_token): one word, or MinIO
    # sends it without the "Bearer " prefix. Never logged.
    auth_token: SecretStr = env("BRIDGE_AUTH_TOKEN")
    # Larger bodies get 413. The bound leaves room in SQS's 256 KiB for the DLQ attributes a
    # poison body is sent with; a MinIO notification is a few KiB.
    max_body_bytes: int = env("BRIDGE_MAX_BODY_BYTES", 128 * 1024, ge=1024, le=250 * 1024)
    # Requests handled at once; one more gets 503 with Retry-After (MinIO retries it).
    max_concurrency: int = env("BRIDGE_MAX_CONCURRENCY", 256, ge=1, le=10_000)
    # How long a message waits for others to share its SendMessageBatch call (≤ 10 per call).
    linger_ms: int = env("BRIDGE_LINGER_MS", 10, ge=0, le=1_000)
    max_concurrent_sends: int = env("BRIDGE_MAX_CONCURRENT_SENDS", 16, ge=1, le=128)

    @field_validator("auth_token")
    @classmethod
    def _token_is_one_word(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if len(token) < 16 or any(c.isspace() for c in token):
            raise ValueError("must be one word of at least 16 characters (e.g. `openssl rand -hex 32`)")
        return value


class UploadSettings(_Part):
    """The producer's uploads: ``S3Storage`` and ``s3convex upload`` (``s3convex.storage``).

    Sizes take bytes or a unit (``8MiB``, ``16m``, ``64 MB``). S3's own limits bound them: a part
    is 5 MiB-5 GiB (the last may be smaller) and at most 10,000 parts make an object, so the part
    size grows for a file that would need more. Memory held is at most ``concurrency`` ×
    max(``multipart_threshold``, ``part_size``): every request in flight holds its bytes.
    """

    # true: each file's record becomes `available` in Convex as soon as its upload completes;
    # false: the final records wait for `await storage.commit()` / leaving `storage.batch(...)`.
    on_write: bool = env("S3_UPLOAD_ON_WRITE", True)
    # boto3's TransferConfig defaults: AWS's recommended 8-16 MiB range, a retried part re-sends
    # at most 8 MiB, and 10 requests in flight hold at most 80 MiB.
    multipart_threshold: int = env("S3_UPLOAD_MULTIPART_THRESHOLD", 8 * MiB, ge=5 * MiB, le=5 * GiB)
    part_size: int = env("S3_UPLOAD_PART_SIZE", 8 * MiB, ge=5 * MiB, le=5 * GiB)
    # Requests in flight (whole-file PUTs and parts alike), over all files of a storage.
    concurrency: int = env("S3_UPLOAD_CONCURRENCY", 10, ge=1, le=128)
    # sha256: each request carries the SHA-256 of its bytes and S3 verifies it (a multipart object's
    # checksum is then S3's composite one); none: no checksum header is sent, for stores that
    # mishandle them. The file's full SHA-256 is computed and recorded either way.
    checksum: Literal["sha256", "none"] = env("S3_UPLOAD_CHECKSUM", "sha256")
    # botocore's own defaults since 1.36 (CRC32 on every upload it is not given a checksum for);
    # when_required turns them off for S3-compatible stores that break on them.
    request_checksum_calculation: Literal["when_supported", "when_required"] = env(
        "AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported")
    response_checksum_validation: Literal["when_supported", "when_required"] = env(
        "AWS_RESPONSE_CHECKSUM_VALIDATION", "when_supported")
    # Tries of one request's work (a PUT, a part, the multipart calls), the first included, on top
    # of botocore's own per-request retries; jittered waits of 0.5-1 s, 1-2 s, … up to 10 s.
    attempts: int = env("S3_UPLOAD_ATTEMPTS", 3, ge=1, le=10)
    # At most one `uploads:report` mutation per session this often: progress is coalesced.
    status_interval_ms: int = env("S3_UPLOAD_STATUS_INTERVAL_MS", 500, ge=50, le=60_000)
    # Status writes Convex cannot take (still unreachable after the bounded retry) go to a durable
    # spool here (SQLite, fsync per write) and are delivered in order when Convex is back, also by
    # the next process using this directory (storage/spool.py). A local disk that outlives the
    # process; unset: no spool, the status waits in memory only.
    spool_dir: Path | None = env("S3_UPLOAD_SPOOL_DIR", None)
    # The spool's bound (payload bytes); past it a write is refused with SpoolFull, none dropped.
    spool_max_bytes: int = env("S3_UPLOAD_SPOOL_MAX_BYTES", 256 * MiB, ge=1024, le=64 * GiB)

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _blank_spool_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("multipart_threshold", "part_size", "spool_max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if isinstance(value, str) and (match := _SIZE_RE.match(value)):
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
        return value

    @field_validator("checksum", "request_checksum_calculation", "response_checksum_validation",
                     mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Settings:
    """Every concern's settings; pass each module only its part."""

    aws: AwsSettings
    sqs: SqsSettings
    convex: ConvexSettings
    consumer: ConsumerSettings
    urls: UrlSettings
    telemetry: TelemetrySettings
    upload: UploadSettings
    # Last, with a default: code that builds a Settings by hand keeps working.
    cleanup: CleanupSettings = field(default_factory=lambda: load(CleanupSettings))

    def parts(self) -> Iterator[_Part]:
        return (getattr(self, f.name) for f in fields(self))

    def as_environment(self) -> dict[str, Any]:
        return {name: value for part in self.parts() for name, value in part.as_environment().items()}


P = TypeVar("P", bound=_Part)


def load(part: type[P], **overrides: Any) -> P:
    """One part, from the environment plus ``overrides`` (keyed by variable or field name,
    any case; ``_env_file=None`` skips ``.env``)."""
    return _load(part, overrides)


def load_settings(**overrides: Any) -> Settings:
    """Every part; the errors of all of them are reported together, one clause per variable."""
    problems: list[str] = []

    def part(kind: type[P]) -> P | None:
        try:
            return _load(kind, overrides)
        except ConfigError as exc:
            problems.append(str(exc))
            return None

    aws, sqs, convex = part(AwsSettings), part(SqsSettings), part(ConvexSettings)
    consumer, urls, telemetry = part(ConsumerSettings), part(UrlSettings), part(TelemetrySettings)
    upload = part(UploadSettings)
    cleanup = part(CleanupSettings)
    if (aws is None or sqs is None or convex is None or consumer is None or urls is None
            or telemetry is None or upload is None or cleanup is None):
        raise ConfigError("; ".join(problems))
    return Settings(aws, sqs, convex, consumer, urls, telemetry, upload, cleanup)


def _load(part: type[P], overrides: dict[str, Any]) -> P:
    variables = {variable.upper(): name for name, variable in part.variables().items()}
    known = {name: name for name in part.model_fields} | variables
    mine: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "_env_file":
            mine[key] = value
        elif (name := known.get(key) or known.get(key.upper()) or known.get(key.lower())) is not None:
            mine[name] = value
    try:
        return part(**mine)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, part)) from None


def describe_validation_error(exc: ValidationError, part: type[_Part]) -> str:
    variables = part.variables()
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        variable = variables.get(field, field.upper()) or part.__name__
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            lines.append(f"{variable} is not set (required)")
        elif field and "input" in error and not isinstance(error["input"], dict):
            shown = "<hidden>" if "KEY" in variable or "TOKEN" in variable else repr(error["input"])
            lines.append(f"{variable}={shown} is invalid: {message}")
        else:
            lines.append(f"{variable}: {message}" if field else message)
    return "; ".join(lines)


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
