"""``s3convex trace BUCKET/KEY``: one asset's chain from S3 request to Convex commit.

From Convex's own records, no log search needed:

- each applied revision (``assets:history``): the S3 event (name, time, x-amz-request-id,
  x-amz-id-2), the SQS message that carried it, the upload run that wrote the object, and
  the revision it produced — when, and under which commit id (the id every log line of that
  flush names);
- each DLQ episode (``trace:deadLetters``): the message, when and why it was dead-lettered, its
  id on the DLQ;
- each replay of such a message (``operations:listReplayRuns``: the runs' ``movedIds``): the
  run, who ran it, and the new message id — which the revision it then produced names.

Steps print in the order they happened in the sync service: a revision at its commit, an
episode at its failure, a replay at its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.ops.assets import parse_location
from s3convex.consumer.ops.clients import clients
from s3convex.consumer.ops.output import JsonOption, console, emit, iso_ms
from s3convex.core.errors import PermanentError
from s3convex.settings import ConvexSettings, load

MAX_HISTORY = 1_000  # assets:history's own bound
MAX_RUNS = 100  # operations:listReplayRuns's own bound: replays older than these are not joined


@dataclass
class Trace:
    bucket: str
    key: str
    record: dict[str, Any] | None
    steps: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        record = self.record or {}
        return {"bucket": self.bucket, "key": self.key, "status": record.get("status"),
                "revision": record.get("revision"), "steps": self.steps}


def build_steps(history: Sequence[dict[str, Any]], dead_letters: Sequence[dict[str, Any]],
                runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps, in the order they happened (pure: tested without Convex)."""
    episodes = {row["dlqMessageId"]: row for row in dead_letters if row.get("dlqMessageId")}
    replays: list[dict[str, Any]] = []
    replayed_to: dict[str, str] = {}  # new SQS message id → the run that sent it
    for run in runs:
        for moved in run.get("movedIds", []):
            if moved["from"] in episodes:
                replays.append({"step": "replayed", "at": run["startedAt"], "runId": run["runId"],
                                "operator": run.get("operator"), "status": run.get("status"),
                                "dlqMessageId": moved["from"], "sqsMessageId": moved["to"]})
                replayed_to[moved["to"]] = run["runId"]
    steps: list[tuple[float, int, dict[str, Any]]] = []
    for row in history:
        correlation = row.get("correlation") or {}
        message_id = correlation.get("sqsMessageId")
        steps.append((row["appliedAt"], 0, {
            "step": "applied", "at": row["appliedAt"], "revision": row["revision"], "type": row["type"],
            "eventName": row["eventName"], "eventTime": iso_ms(row["eventTime"]),
            "s3RequestId": correlation.get("s3RequestId"), "s3HostId": correlation.get("s3HostId"),
            "sqsMessageId": message_id, "uploadRunId": correlation.get("uploadRunId"),
            "replayRunId": replayed_to.get(message_id or ""), "commit": row.get("commit"),
            "etag": row.get("etag"), "size": row.get("size")}))
    for row in dead_letters:
        steps.append((row["failedAt"], 1, {
            "step": "dead_lettered", "at": row["failedAt"], "sqsMessageId": row["sqsMessageId"],
            "dlqMessageId": row.get("dlqMessageId"), "s3RequestId": row.get("s3RequestId"),
            "reason": row["reason"], "receiveCount": row["receiveCount"]}))
    steps.extend((replay["at"], 2, replay) for replay in replays)
    steps.sort(key=lambda item: (item[0], item[1], item[2].get("revision", 0)))
    return [{**step, "at": iso_ms(step["at"])} for _, _, step in steps]


async def trace_asset(convex: ConvexClient, bucket: str, key: str) -> Trace:
    where = {"bucket": bucket, "key": key}
    record, history, dead_letters, runs = await asyncio.gather(
        convex.query("assets:getByKey", where),
        convex.query("assets:history", {**where, "limit": MAX_HISTORY}),
        convex.query("trace:deadLetters", where),
        convex.query("operations:listReplayRuns", {"limit": MAX_RUNS}),
    )
    return Trace(bucket, key, record, build_steps(history, dead_letters, runs))


# --- command -----------------------------------------------------------------------------------

def register(root: typer.Typer) -> None:
    """Mount as ``s3convex trace`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.command("trace")(trace_command)


def trace_command(
    location: Annotated[str, typer.Argument(metavar="BUCKET/KEY", help="e.g. video-assets/sessions/s1/a.mp4")],
    json_output: JsonOption = False,
) -> None:
    """One asset's chain: S3 events, SQS messages, Convex revisions, DLQ and replay episodes."""
    bucket, key = parse_location(location)
    convex_settings = load(ConvexSettings)

    async def fetch() -> Trace:
        async with clients(convex=convex_settings) as opened:
            return await trace_asset(opened.convex, bucket, key)

    found = asyncio.run(fetch())
    if not found.steps and found.record is None:
        raise PermanentError(f"nothing in Convex for {bucket}/{key}: no record, no history, no DLQ episode")
    emit(found.to_dict(), json_output=json_output, render=_print_trace)


def _print_trace(document: dict[str, Any]) -> None:
    console().print(f"[bold]{document['bucket']}/{document['key']}[/]  status {document['status'] or '-'}, "
                  f"revision {document['revision'] if document['revision'] is not None else '-'}")
    table = Table("at", "step", "S3", "SQS", "Convex")
    for step in document["steps"]:
        if step["step"] == "applied":
            s3 = f"{step['eventName']} at {step['eventTime']}\nrequest {step['s3RequestId'] or '-'}"
            sqs = step["sqsMessageId"] or "-"
            if step["replayRunId"]:
                sqs += f"\n(replay {step['replayRunId']})"
            convex = f"revision {step['revision']}\ncommit {step['commit'] or '-'}"
            if step["uploadRunId"]:
                convex += f"\nupload run {step['uploadRunId']}"
        elif step["step"] == "dead_lettered":
            s3 = f"request {step['s3RequestId'] or '-'}"
            sqs = f"{step['sqsMessageId']} → DLQ {step['dlqMessageId'] or '-'}\n{step['reason']}"
            convex = "-"
        else:
            s3 = "-"
            sqs = f"DLQ {step['dlqMessageId']} → {step['sqsMessageId']}"
            convex = f"run {step['runId']} by {step['operator'] or '-'} ({step['status']})"
        table.add_row(step["at"], step["step"], s3, sqs, convex)
    console().print(table)
