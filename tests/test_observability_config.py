"""Which exporters the standard OTEL_* variables turn on, and a bad value named at start."""

from __future__ import annotations

import pytest

from s3convex.consumer.telemetry import metric_exporters, service_resource
from s3convex.consumer.tracing import trace_exporters
from s3convex.core.errors import ConfigError
from s3convex.settings import TelemetrySettings, load

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def test_prometheus_always_and_otlp_only_with_an_endpoint() -> None:
    assert metric_exporters({}) == ["prometheus"]
    assert trace_exporters({}) == []
    assert metric_exporters(ENDPOINT) == ["prometheus", "otlp"]
    assert trace_exporters(ENDPOINT) == ["otlp"]
    assert trace_exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}) == ["otlp"]


def test_the_exporter_variables_and_the_kill_switch_win() -> None:
    assert metric_exporters({**ENDPOINT, "OTEL_METRICS_EXPORTER": "prometheus"}) == ["prometheus"]
    assert metric_exporters({"OTEL_METRICS_EXPORTER": "none"}) == []
    assert metric_exporters({"OTEL_METRICS_EXPORTER": " otlp , console "}) == ["otlp", "console"]
    assert trace_exporters({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}) == []
    assert metric_exporters({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}) == []
    assert trace_exporters({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}) == []


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,statsd")
    with pytest.raises(ConfigError, match="OTEL_METRICS_EXPORTER"):
        load(TelemetrySettings, _env_file=None)
    monkeypatch.delenv("OTEL_METRICS_EXPORTER")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        load(TelemetrySettings, _env_file=None)


def test_the_service_name_is_ours_unless_the_environment_names_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service_resource().attributes["service.name"] == "s3convex"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=sync-eu,deployment.environment=prod")
    assert service_resource().attributes["service.name"] == "sync-eu"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sync-us")
    assert service_resource().attributes["service.name"] == "sync-us"
