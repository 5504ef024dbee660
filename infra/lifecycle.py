"""The bucket's lifecycle rules: what belongs in S3 itself rather than in the cleanup worker.

Two rules, found among the bucket's others by their ID (``s3convex-``…; others' rules are kept):

- ``s3convex-abort-multipart``: ``AbortIncompleteMultipartUpload`` after
  ``S3_ABORT_MULTIPART_DAYS`` — an upload that died half-way leaves hidden, billed parts no
  record knows of (the uploader's ``S3Storage`` aborts what it can; this catches the rest);
- ``s3convex-noncurrent``: ``NoncurrentVersionExpiration`` after ``S3_NONCURRENT_VERSION_DAYS``,
  only when the bucket is versioned — the cleanup worker deletes the version a record knows;
  older versions, and what a delete marker hides, go with this rule.

0 days turns a rule off (it is then removed if present). ``check`` returns the step and the fix
like every other check (infra/plan.py); ``PutBucketLifecycleConfiguration`` replaces the whole
configuration, so the fix writes the others' rules back with ours.
"""

from __future__ import annotations

from typing import Any

from s3convex.infra.aws import _Missing, aws_call
from s3convex.infra.desired import Desired
from s3convex.infra.plan import Difference, Fix, Step

RULE_PREFIX = "s3convex-"
ABORT_MULTIPART_ID = "s3convex-abort-multipart"
NONCURRENT_ID = "s3convex-noncurrent"


def desired_rules(desired: Desired, *, versioned: bool) -> list[dict[str, Any]]:
    rules = []
    if desired.abort_multipart_days > 0:
        rules.append({"ID": ABORT_MULTIPART_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
                      "AbortIncompleteMultipartUpload": {
                          "DaysAfterInitiation": desired.abort_multipart_days}})
    if versioned and desired.noncurrent_version_days > 0:
        rules.append({"ID": NONCURRENT_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
                      "NoncurrentVersionExpiration": {
                          "NoncurrentDays": desired.noncurrent_version_days}})
    return rules


def _normalized(rule: dict[str, Any]) -> dict[str, Any]:
    """What we compare: the fields we set (S3 may add others, or spell the filter its way)."""
    keep = ("ID", "Status", "AbortIncompleteMultipartUpload", "NoncurrentVersionExpiration")
    found = {k: rule[k] for k in keep if k in rule}
    found["Prefix"] = (rule.get("Filter") or {}).get("Prefix", rule.get("Prefix", ""))
    return found


class LifecycleSteps:
    def __init__(self, s3: Any, desired: Desired, bucket_exists: Any) -> None:
        self.s3 = s3
        self.desired = desired
        self._bucket_exists = bucket_exists

    def versioned(self) -> bool:
        answer = aws_call(self.s3.get_bucket_versioning, Bucket=self.desired.bucket)
        return answer.get("Status") in ("Enabled", "Suspended")

    def check(self) -> tuple[Step, Fix | None]:
        if not self._bucket_exists():  # status only: up has created the bucket by now
            return Step("lifecycle", RULE_PREFIX + "*", "create"), None
        try:
            rules = aws_call(self.s3.get_bucket_lifecycle_configuration,
                             Bucket=self.desired.bucket)["Rules"]
        except _Missing:  # NoSuchLifecycleConfiguration
            rules = []
        others = [r for r in rules if not str(r.get("ID", "")).startswith(RULE_PREFIX)]
        ours = sorted((r for r in rules if str(r.get("ID", "")).startswith(RULE_PREFIX)),
                      key=lambda r: r["ID"])
        wanted = desired_rules(self.desired, versioned=self.versioned())
        current_n = [_normalized(r) for r in ours]
        wanted_n = [_normalized(r) for r in sorted(wanted, key=lambda r: r["ID"])]
        if current_n == wanted_n:
            return Step("lifecycle", RULE_PREFIX + "*", "none"), None

        def fix() -> None:
            merged = [*others, *wanted]
            if merged:
                aws_call(self.s3.put_bucket_lifecycle_configuration, Bucket=self.desired.bucket,
                         LifecycleConfiguration={"Rules": merged})
            else:
                aws_call(self.s3.delete_bucket_lifecycle, Bucket=self.desired.bucket)

        action = "create" if not ours else "update"
        return Step("lifecycle", RULE_PREFIX + "*", action,
                    (Difference("rules", current_n, wanted_n),)), fix
