"""What every command shares: the output rule, whole numbers, the one error exit path, the
Convex pager and the one DeleteMessageBatch. Pure pieces first, then commands as processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from s3convex.adapters.convex_pages import convex_pages
from s3convex.adapters.sqs_batch import delete_batch
from s3convex.consumer.cli import _cause_chain
from s3convex.consumer.ops.dlq import Selection
from s3convex.consumer.ops.output import emit, json_line, new_run_id, plain
from s3convex.consumer.ops.replay_audit import RECORD_RUN
from s3convex.consumer.ops.replayer import ReplayReport
from s3convex.core.errors import StorageError
from tests.ops_support import run_cli, run_cli_on_a_terminal
from tests.stack import Stack

# --- output ------------------------------------------------------------------------------------


def test_whole_floats_become_ints_everywhere_in_the_document() -> None:
    document = {"size": 5.0, "ratio": 0.5, "ok": True, "none": None,
                "history": [{"revision": 1.0}, (2.0, "x")], "nested": {"deeper": {"at": 1.8e12}}}
    assert plain(document) == {"size": 5, "ratio": 0.5, "ok": True, "none": None,
                               "history": [{"revision": 1}, [2, "x"]],
                               "nested": {"deeper": {"at": 1_800_000_000_000}}}
    flat = plain(document)
    assert isinstance(flat["size"], int) and isinstance(flat["history"][0]["revision"], int)
    assert plain(True) is True and isinstance(plain(float("inf")), float)
    assert json_line({"size": 5.0}) == '{"size": 5}'


def test_emit_renders_on_a_terminal_and_prints_json_elsewhere(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    document = {"moved": 3.0, "items": [{"size": 1.0}]}

    emit(document, json_output=False, render=seen.append)  # captured stdout: not a terminal
    assert json.loads(capsys.readouterr().out) == {"moved": 3, "items": [{"size": 1}]} and not seen

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    emit(document, json_output=False, render=seen.append)
    assert seen == [{"moved": 3, "items": [{"size": 1}]}]  # what JSON would show, whole
    assert isinstance(seen[0]["moved"], int) and capsys.readouterr().out == ""
    emit(document, json_output=True, render=seen.append)  # --json wins on a terminal too
    assert json.loads(capsys.readouterr().out)["moved"] == 3 and len(seen) == 1


def test_the_cause_chain_names_each_error_once() -> None:
    try:
        try:
            raise ConnectionRefusedError("connection refused")
        except OSError as exc:
            raise StorageError("GetQueueUrl q: unreachable") from exc
    except StorageError as exc:
        assert _cause_chain(exc) == "GetQueueUrl q: unreachable <- connection refused"


# --- the Convex pager --------------------------------------------------------------------------


class _PagedConvex:
    """Answers a paginated query from a list, three items a page; records the calls."""

    def __init__(self, items: list[int]) -> None:
        self.items = items
        self.calls: list[dict[str, Any]] = []

    async def query(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        assert args is not None
        self.calls.append({"path": path, **args})
        start = int(args["paginationOpts"]["cursor"] or 0)
        end = start + args["paginationOpts"]["numItems"]
        return {"page": [{"n": n} for n in self.items[start:end]],
                "isDone": end >= len(self.items), "continueCursor": str(end)}


async def test_pages_follow_the_cursor_and_read_ahead_only_when_asked() -> None:
    convex = _PagedConvex(list(range(7)))
    pages = convex_pages(convex, "assets:listByBucket", {"bucket": "b"}, page_size=3)

    first = await anext(pages)
    assert [r["n"] for r in first.items] == [0, 1, 2] and not first.is_done
    assert len(convex.calls) == 1  # the next page waits for the caller (url_refresh stores first)
    rest = [page async for page in pages]
    assert [[r["n"] for r in p.items] for p in rest] == [[3, 4, 5], [6]] and rest[-1].is_done
    assert [c["paginationOpts"] for c in convex.calls] == [
        {"numItems": 3, "cursor": None}, {"numItems": 3, "cursor": "3"}, {"numItems": 3, "cursor": "6"}]
    assert all(c["bucket"] == "b" and c["path"] == "assets:listByBucket" for c in convex.calls)


# --- the one DeleteMessageBatch ----------------------------------------------------------------


class _Sqs:
    def __init__(self, failed: list[dict[str, str]] | None = None, error: Exception | None = None) -> None:
        self.failed = failed or []
        self.error = error
        self.calls: list[list[dict[str, str]]] = []

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.calls.append(Entries)
        if self.error is not None:
            raise self.error
        return {"Failed": [f for f in self.failed if int(f["Id"]) < len(Entries)]}


async def test_delete_batch_reports_each_entry_and_logs_gone_handles_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    sqs = _Sqs(failed=[{"Id": "1", "Code": "ReceiptHandleIsInvalid"}, {"Id": "2", "Code": "InternalError"}])
    with caplog.at_level(logging.INFO, logger="s3convex.adapters.sqs_batch"):
        ok = await delete_batch(sqs, "q", ["h0", "h1", "h2"], message_ids=["m0", "m1", "m2"])
    assert ok == [True, False, False]
    levels = {r.__dict__["message_id"]: r.levelno for r in caplog.records}
    assert levels == {"m1": logging.INFO, "m2": logging.WARNING}


async def test_delete_batch_never_raises_and_sends_ten_at_a_time() -> None:
    assert await delete_batch(_Sqs(error=ConnectionResetError("reset")), "q", ["a", "b"]) == [False, False]
    sqs = _Sqs()
    assert await delete_batch(sqs, "q", [f"h{i}" for i in range(23)]) == [True] * 23
    assert [len(entries) for entries in sqs.calls] == [10, 10, 3]


# --- commands as processes: the output rule and the one exit path -----------------------------


def _s3convex(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3convex", *args], env=env, cwd="/",
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_a_configuration_error_is_one_line_and_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "CONVEX_", "SQS_"))}
    env.update(S3_BUCKET="media", CONVEX_URL="notaurl", CONVEX_DEPLOY_KEY="k")
    result = _s3convex("assets", "list", env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("s3convex: configuration error: CONVEX_URL='notaurl' is invalid")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_config_follows_the_output_rule() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "CONVEX_", "SQS_"))}
    env.update(S3_BUCKET="media", CONVEX_URL="https://happy-otter-123.convex.cloud",
               CONVEX_DEPLOY_KEY="secret-key")
    result = _s3convex("config", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)  # a pipe is not a terminal
    assert shown["S3_BUCKET"] == "media" and isinstance(shown["SQS_MAX_RECEIVE_COUNT"], int)
    assert "secret-key" not in result.stdout


@pytest.mark.e2e
async def test_a_command_error_takes_the_one_exit_path(stack: Stack) -> None:
    result = await run_cli(stack, "replay", "list", env={"SQS_DLQ_NAME": f"{stack.resources.prefix}-none"})

    assert result.code == 1 and result.stdout == ""
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("s3convex: error: ") and f"{stack.resources.prefix}-none" in first
    assert " <- " in first and "NonExistentQueue" in first  # the cause chain, plainly, on one line
    assert not rest and "Traceback" not in result.stderr


@pytest.mark.e2e
async def test_replay_runs_print_whole_numbers(stack: Stack) -> None:
    report = ReplayReport(run_id=new_run_id(), dry_run=False, source="dlq", target="q",
                          selection=Selection(), status="completed", examined=3, selected=2, moved=2)
    await stack.convex.mutation(RECORD_RUN, report.to_audit(operator="ops", host="h"))

    runs = await run_cli(stack, "replay", "runs")  # Convex answers 3.0, 2.0, 2.0

    assert runs.code == 0, runs.stderr
    run = next(r for r in runs.json if r["runId"] == report.run_id)
    assert (run["examined"], run["selected"], run["moved"]) == (3, 2, 2)
    assert all(isinstance(run[k], int) for k in ("examined", "selected", "moved", "startedAt"))
    assert '"moved": 2,' in runs.stdout


@pytest.mark.e2e
async def test_every_command_prints_a_table_on_a_terminal(stack: Stack) -> None:
    key = "tty/clip.mp4"
    stack.put(key, b"12345", ContentType="video/mp4")
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0
    stack.sqs.send_message(QueueUrl=stack.dlq_url, MessageBody="not json")
    location = f"{stack.bucket}/{key}"

    shown = await run_cli_on_a_terminal(stack, "assets", "show", location)
    assert shown.code == 0, shown.stderr
    assert "5 B (5 B)" in shown.stdout and "5.0" not in shown.stdout and "{" not in shown.stdout

    expectations = {
        ("assets", "list", "--prefix", "tty/"): (0, "1 record(s)"),
        ("health", "--settle", "0", "--sample", "0"): (0, "1 dead-lettered"),  # a warning
        ("reconcile", "--prefix", "tty/"): (0, "consistent"),
        ("replay", "list"): (0, "1 of 1 messages match"),
        ("replay", "replay", "--dry-run"): (0, "would move 1 of 1 examined"),
        ("replay", "runs"): (0, "Operator"),
        ("url", "owner", "s-tty", "erin"): (0, "erin owns session s-tty"),
        ("url", "audit", "--principal", "erin"): (0, "Principal"),
        ("infra", "status"): (0, "present"),
        ("config",): (0, f"S3_BUCKET={stack.bucket}"),
    }
    for args, (code, text) in expectations.items():
        result = await run_cli_on_a_terminal(stack, *args)
        assert result.code == code, (args, result.stdout, result.stderr)
        assert text in result.stdout, (args, result.stdout)
        assert not result.stdout.lstrip().startswith(("{", "[")), (args, result.stdout)
        assert "Traceback" not in result.stderr, (args, result.stderr)
