"""Configuration from the environment (and an optional ``.env``), validated once at start.

Every setting is an environment variable named like the field in upper case. A missing or
invalid value is reported by :func:`load_settings` as one line naming the variable and what
is allowed; the CLI prints it and exits 2.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from s3convex.core.errors import ConfigError
from s3convex.core.layout import DEFAULT_LAYOUT, KeyLayout

# S3's bucket naming rules (general purpose buckets): 3-63 chars, lowercase, digits, dots, hyphens.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
SEVEN_DAYS = 7 * 24 * 3600
_CORS_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"})

PositiveInt = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- AWS (S3 + SQS). Credentials come from the standard AWS chain, never from here.
    aws_endpoint_url: AnyHttpUrl | None = None
    aws_region: str = "us-east-1"
    s3_bucket: str
    sqs_queue_name: str = "s3convex-events"
    sqs_queue_url: AnyHttpUrl | None = None
    sqs_dlq_name: str = "s3convex-events-dlq"
    sqs_max_receive_count: int = Field(5, ge=1, le=1000)
    sqs_visibility_timeout: int = Field(60, ge=1, le=43200)
    s3_notification_prefix: str = ""
    s3_notification_suffix: str = ""

    # --- Convex
    convex_url: AnyHttpUrl
    convex_deploy_key: SecretStr
    convex_timeout: float = Field(10.0, gt=0, le=300)

    # --- Asset URLs
    s3_public_base_url: AnyHttpUrl | None = None
    s3_presign_expires: int = Field(3600, ge=1, le=SEVEN_DAYS)
    s3_upload_on_write: bool = False
    # Per kind, the longest life of a URL handed out by AssetAccess (`s3convex url get`): the
    # more sensitive the file, the shorter. Never above SigV4's 7 days.
    url_expires_video: int = Field(3600, ge=1, le=SEVEN_DAYS)
    url_expires_source: int = Field(300, ge=1, le=SEVEN_DAYS)
    url_expires_metadata: int = Field(900, ge=1, le=SEVEN_DAYS)
    url_expires_manifest: int = Field(900, ge=1, le=SEVEN_DAYS)
    url_expires_thumbnail: int = Field(3600, ge=1, le=SEVEN_DAYS)
    url_expires_subtitle: int = Field(3600, ge=1, le=SEVEN_DAYS)
    url_expires_other: int = Field(900, ge=1, le=SEVEN_DAYS)
    # The refresher re-signs stored URLs expiring within the margin, every interval.
    url_refresh_interval: int = Field(60, ge=1, le=86_400)
    url_refresh_margin: int = Field(600, ge=1, le=SEVEN_DAYS)

    # --- What keys mean (handlers/layout.py): ";"-separated patterns, first match wins
    asset_key_layout: str = DEFAULT_LAYOUT

    # --- Bucket settings applied by `infra up`
    s3_cors_allowed_origins: str = ""  # comma-separated; empty leaves CORS alone
    s3_cors_allowed_methods: str = "GET,HEAD"
    s3_cors_max_age: int = Field(3600, ge=0, le=86_400)
    s3_kms_key_id: str | None = None  # set: default SSE-KMS encryption with this key

    # --- Consumer daemon
    consumer_pollers: PositiveInt = 4
    consumer_max_in_flight: PositiveInt = 500
    consumer_flush_events: int = Field(200, ge=1, le=1000)
    consumer_flush_ms: int = Field(50, ge=0, le=60_000)
    consumer_max_concurrent_flushes: int = Field(8, ge=1, le=16)
    consumer_head_concurrency: PositiveInt = 32
    # HeadObject and presigned GETs signed by botocore's signers directly (about 3x less CPU);
    # off: everything through aiobotocore.
    consumer_signed_head: bool = True
    # How long a finished message waits for others to share its DeleteMessageBatch call (up to
    # 10 per call): at a steady 100 msg/s, 100 ms makes ~10 deletes one call instead of ~10 calls.
    consumer_delete_wait_ms: int = Field(100, ge=0, le=5_000)
    consumer_grace_seconds: float = Field(20.0, ge=0)
    # Long-poll wait: 10 s keeps SIGTERM → exit under ~10 s at a negligible request cost.
    consumer_wait_seconds: int = Field(10, ge=0, le=20)
    health_port: int | None = Field(None, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("s3_bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET_RE.match(value) or ".." in value:
            raise ValueError("must be an S3 bucket name: 3-63 of a-z 0-9 . -")
        return value

    @field_validator("sqs_queue_name", "sqs_dlq_name")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if not _QUEUE_RE.match(value):
            raise ValueError("must be an SQS queue name: 1-80 of A-Z a-z 0-9 _ -")
        return value

    @field_validator("convex_deploy_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("asset_key_layout")
    @classmethod
    def _layout_parses(cls, value: str) -> str:
        return KeyLayout.parse(value).spec

    @field_validator("s3_cors_allowed_methods")
    @classmethod
    def _cors_methods(cls, value: str) -> str:
        methods = _comma_list(value.upper())
        unknown = sorted(set(methods) - _CORS_METHODS)
        if unknown or not methods:
            raise ValueError(f"must be a comma-separated list of {', '.join(sorted(_CORS_METHODS))}")
        return ",".join(methods)

    @field_validator("s3_kms_key_id")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _distinct_queues(self) -> Settings:
        if self.sqs_queue_name == self.sqs_dlq_name:
            raise ValueError("SQS_DLQ_NAME must differ from SQS_QUEUE_NAME")
        return self

    @property
    def endpoint_url(self) -> str | None:
        """The AWS endpoint as botocore wants it (no trailing slash), or None for real AWS."""
        return str(self.aws_endpoint_url).rstrip("/") if self.aws_endpoint_url else None

    @property
    def convex_base_url(self) -> str:
        return str(self.convex_url).rstrip("/")

    @property
    def key_layout(self) -> KeyLayout:
        return KeyLayout.parse(self.asset_key_layout)

    def url_expires_for(self, kind: str) -> int:
        """Seconds a URL handed out for an asset of this kind may live (URL_EXPIRES_<KIND>)."""
        return min(int(getattr(self, f"url_expires_{kind}", self.url_expires_other)), SEVEN_DAYS)

    @property
    def refresh_margin(self) -> int:
        """The margin actually used: at most half a stored URL's life, so a fresh URL is never
        already due for the next refresh."""
        return max(1, min(self.url_refresh_margin, self.s3_presign_expires // 2))

    @property
    def cors_allowed_origins(self) -> tuple[str, ...]:
        return tuple(_comma_list(self.s3_cors_allowed_origins))

    @property
    def cors_allowed_methods(self) -> tuple[str, ...]:
        return tuple(_comma_list(self.s3_cors_allowed_methods))


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "configuration"
        variable = field.upper()
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            lines.append(f"{variable} is not set (required)")
        elif "input" in error and field and not isinstance(error["input"], dict):
            shown = "<hidden>" if "key" in field else repr(error["input"])
            lines.append(f"{variable}={shown} is invalid: {message}")
        else:
            lines.append(f"{variable}: {message}")
    return "; ".join(lines)
