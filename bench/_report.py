"""The consumer benchmark's figures: one :class:`Result` per run, and the printed report with
its targets (PASS/FAIL) — what ``consumer_bench.py`` measured, laid out side by side."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from _stack import CONVEX_WAN_LATENCY_MS, WAN_DELAY_MS

TARGET_LOOPBACK_VS_FLOOR = 0.8
TARGET_WAN_VS_NAIVE = 10.0
TARGET_RSS_MB = 150.0
TARGET_STEADY_P99_S = 1.0


@dataclass
class Result:
    run: str  # "drain", "rss", "steady-captured", "steady-live"
    contender: str  # "floor", "floor-botocore", "ours", "naive"
    profile: str
    round: int
    events: int
    committed: int | None  # records in Convex afterwards (None: the floor writes none)
    drain_s: float | None
    exit_s: float
    exit_code: int
    peak_rss_mb: float
    cpu_s: float
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    errors: int = 0  # warning/error lines in the contender's log
    note: str = ""

    max_lag_s: float | None = None
    cpu_used: dict[str, float] = field(default_factory=dict)  # CPU s per process tree, "other"

    @property
    def rate(self) -> float | None:
        return self.events / self.drain_s if self.drain_s else None

    @property
    def cpu_ms_per_event(self) -> float:
        return self.cpu_s * 1000 / self.events if self.events else 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def describe(r: Result) -> str:
    rate = f"{r.rate:,.0f} ev/s" if r.rate else "-"
    lag = f", lag p50 {r.lag_p50_s:.2f} s p99 {r.lag_p99_s:.2f} s" if r.lag_p99_s is not None else ""
    return (f"{r.events:,} events, {rate}, drain {fmt(r.drain_s, '.1f')} s, exit {r.exit_s:.1f} s"
            f"{lag}, RSS {r.peak_rss_mb:.0f} MB, CPU {r.cpu_s:.1f} s" + (f" ({r.note})" if r.note else ""))


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


# --- report --------------------------------------------------------------------------------------


def report(results: list[Result], args: argparse.Namespace, preload: dict[str, Any]) -> list[str]:
    drains = [r for r in results if r.run == "drain"]

    def rates(contender: str, profile: str) -> list[float]:
        return [r.rate for r in drains if (r.contender, r.profile) == (contender, profile) and r.rate]

    def paired(contender: str, profile: str, round_: int) -> Result | None:
        return next((r for r in drains if (r.contender, r.profile, r.round) == (contender, profile, round_)), None)

    def vs(r: Result, contender: str) -> float | None:
        base = paired(contender, r.profile, r.round) or paired(contender, r.profile, 1)
        return r.rate / base.rate if r.rate and base and base.rate else None

    settings = dict(item.split("=", 1) for item in args.set)
    lines = [
        "",
        f"consumer benchmark — LocalStack {preload['localstack']}, local Convex server, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}, load average "
        f"{preload['load_start']:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        f"events: {preload['events']:,} real uploads ({preload['upload_rate']:.0f} puts/s); their "
        "notification bodies were captured once and are re-sent unchanged (SendMessageBatch) "
        "before every drain, so every contender drains the identical event set",
        f"wan: +{WAN_DELAY_MS} ms each way on every S3/SQS call (latency proxy) and "
        f"+{CONVEX_WAN_LATENCY_MS} ms per Convex call (server latency injection)",
        "daemon: default settings" + "".join(f", {k}={v}" for k, v in sorted(settings.items()))
        + f"; floor: {args.floor_pollers} pollers; rounds: {args.repeat} (floor and ours "
        "alternate; the naive consumer runs once)",
        "",
    ]
    header = (f"{'run':<16}{'profile':<9}{'contender':<15}{'#':>2}{'events':>7}{'drain s':>8}"
              f"{'exit s':>7}{'events/s':>9}{'×floor':>7}{'×naive':>7}{'lag p50':>8}{'lag p99':>8}"
              f"{'RSS MB':>7}{'CPU s':>6}{'ms/ev':>6} │{'LS':>5}{'Cvx':>5}{'prx':>5}{'other':>6}  note")
    lines += [header, "-" * len(header)]
    for r in results:
        note = r.note
        if r.committed is not None and r.committed < r.events and r.run != "rss":
            note = f"only {r.committed:,} committed; {note}".rstrip("; ")
        if r.errors:
            note = f"{r.errors} warning lines in its log; {note}".rstrip("; ")
        lines.append(
            f"{r.run:<16}{r.profile:<9}{r.contender:<15}{r.round:>2}{r.events:>7,}"
            f"{fmt(r.drain_s, '.1f'):>8}{r.exit_s:>7.1f}{fmt(r.rate, ',.0f'):>9}"
            f"{fmt(vs(r, 'floor') if r.run == 'drain' else None, '.2f'):>7}"
            f"{fmt(vs(r, 'naive') if r.run == 'drain' else None, '.1f'):>7}"
            f"{fmt(r.lag_p50_s, '.2f'):>8}{fmt(r.lag_p99_s, '.2f'):>8}"
            f"{r.peak_rss_mb:>7.0f}{r.cpu_s:>6.1f}{r.cpu_ms_per_event:>6.1f} │"
            + "".join(f"{fmt(r.cpu_used.get(name), '.0f'):>{width}}" for name, width in
                      (("localstack", 5), ("convex", 5), ("proxy", 5), ("other", 6)))
            + f"  {note}")
    lines += [
        "",
        "events/s = events / drain s (contender process start → SQS first counts the queue "
        "empty); exit s adds the contender's own empty-queue check and shutdown. RSS is the "
        "contender process's own peak (VmHWM, sampled every 0.1 s), CPU its user+system "
        "time. ×floor and ×naive compare with the same round's run. Lag: drain runs — "
        "Convex commit (updatedAt) − when the copy was enqueued, i.e. mostly time waiting in "
        "the backlog; steady-captured — SendMessage → Convex commit, notifications sent at a "
        "steady rate; steady-live — S3 eventTime → Convex commit, objects uploaded at a steady "
        "rate. "
        "Right of │: CPU seconds the same run cost LocalStack, the local Convex server and the "
        "latency proxy, and what the rest of the machine was busy with meanwhile (other "
        "processes than this benchmark's).",
        "",
        "targets:",
    ]

    def target(label: str, ok: bool | None, shown: str) -> None:
        verdict = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"  {verdict}  {label:<56} {shown}")

    ratios = [ratio for r in drains if (r.contender, r.profile) == ("ours", "loopback")
              and (ratio := vs(r, "floor")) is not None]
    median = statistics.median(ratios) if ratios else None
    target("loopback: ours ≥ 0.8× floor", None if median is None else median >= TARGET_LOOPBACK_VS_FLOOR,
           "not measured" if median is None else
           f"{median:.2f}× (median of rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    ours, naive = rates("ours", "wan"), rates("naive", "wan")
    ratio = statistics.median(ours) / statistics.median(naive) if ours and naive else None
    target("wan: ours ≥ 10× naive", None if ratio is None else ratio >= TARGET_WAN_VS_NAIVE,
           "not measured" if ratio is None else
           f"{ratio:.1f}× ({statistics.median(ours):,.0f} vs {statistics.median(naive):,.1f} events/s)")
    rss = next((r for r in results if r.run == "rss"), None)
    target(f"peak RSS ≤ {TARGET_RSS_MB:.0f} MB with {args.rss_events:,} queued",
           None if rss is None else rss.peak_rss_mb <= TARGET_RSS_MB,
           "not measured" if rss is None else f"{rss.peak_rss_mb:.0f} MB")
    steady_runs = (("live", args.steady_live_rate, "S3 eventTime → commit"),
                   ("captured", args.steady_rate, "SendMessage → commit"))
    for profile in args.profiles:
        for source, rate, path in steady_runs:
            steady = next((r for r in results if (r.run, r.profile) == (f"steady-{source}", profile)), None)
            if steady is None and rate <= 0:
                continue
            ok = None if steady is None else (
                steady.lag_p99_s is not None and steady.committed == steady.events
                and steady.lag_p99_s < TARGET_STEADY_P99_S)
            target(f"{profile}: p99 < 1 s at {rate:g}/s, {path}", ok,
                   "not measured" if steady is None else
                   f"p99 {fmt(steady.lag_p99_s, '.2f', ' s')}, {steady.committed:,}/{steady.events:,} committed")
    return lines
