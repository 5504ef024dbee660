"""Configuration: valid settings load; a bad value is one clear line naming the variable, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from s3convex.core.errors import ConfigError
from s3convex.settings import load_settings

GOOD = {
    "S3_BUCKET": "video-assets",
    "CONVEX_URL": "http://127.0.0.1:3210",
    "CONVEX_DEPLOY_KEY": "prod:abc|secretsecret",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("S3_", "SQS_", "CONVEX_", "AWS_", "CONSUMER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(os.path.dirname(__file__))  # no stray .env from the project root
    return monkeypatch


def test_valid_environment_loads(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.aws.bucket == "video-assets"
    assert settings.convex.base_url == "http://127.0.0.1:3210"
    assert settings.aws.endpoint_url == "http://127.0.0.1:4566"
    assert settings.sqs.max_receive_count == 5
    assert settings.urls.presign_expires == 3600
    assert "secretsecret" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CONVEX_URL", "notaurl", "CONVEX_URL='notaurl' is invalid"),
        ("S3_BUCKET", "Bad_Bucket", "S3_BUCKET='Bad_Bucket' is invalid"),
        ("S3_PRESIGN_EXPIRES", "999999999", "S3_PRESIGN_EXPIRES='999999999' is invalid"),
        ("SQS_MAX_RECEIVE_COUNT", "0", "SQS_MAX_RECEIVE_COUNT='0' is invalid"),
        ("CONSUMER_SIGNED_HEAD", "perhaps", "CONSUMER_SIGNED_HEAD='perhaps' is invalid"),
    ],
)
def test_invalid_value_names_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    for name, good in GOOD.items():
        clean_env.setenv(name, good)
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(expected)


def test_missing_required_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONVEX_URL", GOOD["CONVEX_URL"])
    clean_env.setenv("CONVEX_DEPLOY_KEY", GOOD["CONVEX_DEPLOY_KEY"])
    with pytest.raises(ConfigError, match=r"^S3_BUCKET is not set \(required\)$"):
        load_settings()


def test_deploy_key_never_echoed(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        clean_env.setenv(name, value)
    clean_env.setenv("CONVEX_DEPLOY_KEY", "   ")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "CONVEX_DEPLOY_KEY=<hidden> is invalid" in str(info.value)


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "CONVEX_", "SQS_"))}
    env.update(GOOD, CONVEX_URL="notaurl")
    result = subprocess.run(
        [sys.executable, "-m", "s3convex", "config"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("s3convex: configuration error: CONVEX_URL='notaurl' is invalid")
    assert "Traceback" not in result.stderr


def test_cli_usage_error_exits_2_without_traceback(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "s3convex", "run", "--no-such-flag"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "No such option" in result.stderr
    assert "Traceback" not in result.stderr
