"""``scripts/local-stack.sh``: one consistent local state across restarts.

LocalStack in host mode keeps nothing across a restart (persistence is a LocalStack Pro
feature: ``PERSISTENCE=1`` in the community edition 4.14 loses every bucket, measured), so the
script keeps the local Convex server's records exactly as long as the LocalStack process they
describe: ``down`` + ``up`` starts both empty, ``up`` on a running stack and a restart of the
Convex server alone keep both. ``s3convex reconcile`` finds no drift at every step.

Runs the real script on free ports with its own state directories (a developer's stack on the
default ports and ``.state`` is never touched), on the LocalStack tier only (~20 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.backends import free_port
from tests.stack import ROOT

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "scripts" / "local-stack.sh"
# What the developer's shell (or another test) may hold that would steer the stack elsewhere.
FOREIGN = ("AWS_", "S3_", "SQS_", "CONVEX_", "LOCALSTACK_", "S3CONVEX_", "URL_", "CONSUMER_")


class LocalStack:
    def __init__(self, tmp: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.state = tmp / "state"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)},
            "S3CONVEX_STATE_DIR": str(self.state),
            "LOCALSTACK_STATE_DIR": str(tmp / "localstack"),
            "LOCALSTACK_PORT": str(free_port()),
            "CONVEX_LOCAL_PORT": str(free_port()),
            "S3CONVEX_SKIP_SETUP": "1",
            "S3_BUCKET": f"s3c-stack-{run}",
            "SQS_QUEUE_NAME": f"s3c-stack-{run}-events",
            "SQS_DLQ_NAME": f"s3c-stack-{run}-dlq",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def script(self, command: str) -> str:
        done = subprocess.run(["bash", str(SCRIPT), command], cwd=ROOT, env=self.env, text=True,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def settings(self) -> dict[str, str]:
        exports = subprocess.run(["bash", str(SCRIPT), "env"], cwd=ROOT, env=self.env, text=True,
                                 capture_output=True, check=True).stdout
        pairs = (line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
        return {**self.env, **dict(pairs), "CONSUMER_WAIT_SECONDS": "1", "CONSUMER_FLUSH_MS": "20"}

    def s3convex(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "s3convex", *args], cwd=ROOT, env=self.settings(),
                              text=True, capture_output=True, timeout=120)

    def s3(self) -> Any:
        env = self.settings()
        return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def record(self, key: str) -> dict[str, Any] | None:
        env = self.settings()
        answer = httpx.post(f"{env['CONVEX_URL']}/api/query", timeout=10,
                            headers={"Authorization": f"Convex {env['CONVEX_DEPLOY_KEY']}"},
                            json={"path": "assets:getByKey", "format": "json",
                                  "args": {"bucket": env["S3_BUCKET"], "key": key}}).json()
        assert answer["status"] == "success", answer
        return answer["value"]

    def reconcile(self) -> dict[str, Any]:
        done = self.s3convex("reconcile", "--json")
        assert done.returncode == 0, done.stdout + done.stderr[-2000:]  # exit 1: drift
        return json.loads(done.stdout)

    def stop_convex_only(self) -> None:
        pid = int((self.state / "convex-local.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError("the local Convex server did not stop")


@pytest.fixture
def local_stack(aws_backend: str, tmp_path: Path):
    if aws_backend != "localstack":
        pytest.skip("starts LocalStack itself: on the LocalStack tier")
    if not (ROOT / ".localstack" / "venv" / "bin" / "python").exists():
        pytest.skip("LocalStack's venv is not installed")
    stack = LocalStack(tmp_path)
    try:
        yield stack
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], cwd=ROOT, env=stack.env, capture_output=True,
                       timeout=60)


def test_down_and_up_start_both_empty_and_restarts_of_convex_keep_both(local_stack: LocalStack) -> None:
    key = "sessions/s1/scenes/intro/v1/video.mp4"
    local_stack.script("up")
    local_stack.s3().put_object(Bucket=local_stack.env["S3_BUCKET"], Key=key, Body=b"hello")
    drained = local_stack.s3convex("run", "--drain")
    assert drained.returncode == 0, drained.stderr[-3000:]
    assert (local_stack.record(key) or {}).get("status") == "available"
    assert local_stack.reconcile()["records"] == 1

    # `up` on a running stack, and the Convex server restarted alone: the same LocalStack
    # process, so its records stay.
    local_stack.script("up")
    # A stack started before owners were recorded is adopted as it is.
    owner = local_stack.state / "convex-state.owner"
    owner.unlink()
    local_stack.script("up")
    assert owner.exists() and (local_stack.record(key) or {}).get("status") == "available"
    local_stack.stop_convex_only()
    local_stack.script("up")
    assert (local_stack.record(key) or {}).get("status") == "available"
    summary = local_stack.reconcile()
    assert (summary["objects"], summary["records"], summary["drift"]) == (1, 1, 0)

    # LocalStack restarted: S3 starts empty, and so does Convex.
    local_stack.script("down")
    said = local_stack.script("up")
    assert "starting the local Convex server empty too" in said, said
    assert local_stack.s3().list_objects_v2(Bucket=local_stack.env["S3_BUCKET"]).get("KeyCount") == 0
    assert local_stack.record(key) is None
    summary = local_stack.reconcile()
    assert (summary["objects"], summary["records"], summary["gone"], summary["drift"]) == (0, 0, 0, 0)
