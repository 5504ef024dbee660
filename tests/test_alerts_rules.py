"""The Prometheus alerting rules in infra/alerts/: valid, each with a runbook, each tested firing
and quiet by ``promtool test rules`` (Debian's prometheus package, installed by scripts/setup.sh).

promtool missing fails these tests rather than skipping them: the rules would ship untested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "infra" / "alerts" / "s3convex.rules.yml"
TESTS = sorted((ROOT / "infra" / "alerts" / "tests").glob("*.yml"))
# Metrics the rules watch that appear only once something happened (a failed removal) or in
# another process (the MinIO bridge's, scraped from a running bridge by tests/test_bridge.py).
NAMED_ELSEWHERE = {"s3convex_cleanup_failures_total", "s3convex_bridge_requests_total"}


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is not installed: run scripts/setup.sh (Debian's prometheus package)"
    return found


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def rule_metric_names() -> set[str]:
    """Every metric name the rules' expressions select."""
    names: set[str] = set()
    for rule in rules():
        names.update(re.findall(r"\b((?:s3convex|messaging)_[a-z0-9_]+?)(?:_bucket)?\b(?=\s*[{\[)])", rule["expr"]))
    return names


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert TESTS, "no promtool tests under infra/alerts/tests"
    result = subprocess.run([_promtool(), "test", "rules", *map(str, TESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_runbook_and_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    for rule in rules():
        name = rule["alert"]
        assert rule["annotations"].get("runbook"), f"{name} has no runbook annotation"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert name in fired, f"{name} is never tested firing"
        assert name in quiet, f"{name} is never tested quiet"


def test_the_rules_watch_what_is_exported() -> None:
    # The names the rules select, less the cleanup worker's, are in the daemon's scrape
    # (tests/test_observability.py asserts each of EXPORTED appears on a running daemon's /metrics).
    from tests.test_observability import EXPORTED

    assert rule_metric_names() - NAMED_ELSEWHERE <= EXPORTED, rule_metric_names() - NAMED_ELSEWHERE - EXPORTED
