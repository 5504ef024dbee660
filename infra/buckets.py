"""The bucket: does it exist, create it, empty and delete it — and its two optional settings.

Besides the bucket itself, two settings of it are checked and fixed when configured: our CORS
rule (``S3_CORS_ALLOWED_ORIGINS``; others' rules are kept, ours is found by
:data:`~s3convex.infra.desired.CORS_RULE_ID`) and default SSE-KMS encryption (``S3_KMS_KEY_ID``). Each
``check_*`` reads what exists and returns its :class:`~s3convex.infra.plan.Step` with the fix, or None
when nothing differs — or when the bucket is missing, which only ``status`` can see (``up``
has created it by then). Emptying (``down --force``) removes every object version, delete
marker and unfinished multipart upload.
"""

from __future__ import annotations

from typing import Any

from s3convex.core.errors import Forbidden, StorageError
from s3convex.infra.aws import _Missing, aws_call, aws_pages
from s3convex.infra.desired import (
    CORS_RULE_ID,
    Desired,
    normalize_cors_rule,
    normalize_encryption_rule,
)
from s3convex.infra.plan import Action, Difference, Fix, Step


class BucketSteps:
    """Checks and fixes of :attr:`Desired.bucket` and its settings, through a boto3 S3 client."""

    def __init__(self, s3: Any, desired: Desired) -> None:
        self.s3 = s3
        self.desired = desired

    # --- checks: (step, fix or None) ---

    def check_bucket(self) -> tuple[Step, Fix | None]:
        bucket = self.desired.bucket
        if self.exists():
            return Step("bucket", bucket, "none"), None
        return Step("bucket", bucket, "create"), self.create

    def check_cors(self) -> tuple[Step, Fix | None]:
        desired = self.desired.cors_rule()
        if not self.exists():  # status only: up has created the bucket by now
            return Step("cors", CORS_RULE_ID, "create"), None
        try:
            rules = aws_call(self.s3.get_bucket_cors, Bucket=self.desired.bucket)["CORSRules"]
        except _Missing:
            rules = []
        others = [rule for rule in rules if rule.get("ID") != CORS_RULE_ID]
        ours = next((rule for rule in rules if rule.get("ID") == CORS_RULE_ID), None)

        def fix() -> None:
            aws_call(self.s3.put_bucket_cors, Bucket=self.desired.bucket,
                     CORSConfiguration={"CORSRules": [*others, desired]})

        if ours is None:
            return Step("cors", CORS_RULE_ID, "create"), fix
        current, wanted = normalize_cors_rule(ours), normalize_cors_rule(desired)
        if current == wanted:
            return Step("cors", CORS_RULE_ID, "none"), None
        differences = tuple(Difference(k, v, wanted[k]) for k, v in current.items() if v != wanted[k])
        return Step("cors", CORS_RULE_ID, "update", differences), fix

    def check_encryption(self) -> tuple[Step, Fix | None]:
        desired = self.desired.encryption_rule()
        if not self.exists():  # status only
            return Step("encryption", "sse-kms", "create"), None
        try:
            answer = aws_call(self.s3.get_bucket_encryption, Bucket=self.desired.bucket)
            rules = answer["ServerSideEncryptionConfiguration"]["Rules"]
        except _Missing:
            rules = []

        def fix() -> None:
            aws_call(self.s3.put_bucket_encryption, Bucket=self.desired.bucket,
                     ServerSideEncryptionConfiguration={"Rules": [desired]})

        current = normalize_encryption_rule(rules[0]) if rules else None
        wanted = normalize_encryption_rule(desired)
        if current == wanted:
            return Step("encryption", "sse-kms", "none"), None
        action: Action = "create" if current is None else "update"
        return Step("encryption", "sse-kms", action, (Difference("Rule", current, wanted),)), fix

    # --- reading ---

    def exists(self) -> bool:
        try:
            aws_call(self.s3.head_bucket, Bucket=self.desired.bucket)
        except _Missing:
            return False
        except Forbidden as exc:
            raise StorageError(
                f"bucket {self.desired.bucket} exists but is not accessible to these "
                f"credentials (S3 bucket names are global: another account may own it): {exc}"
            ) from exc
        return True

    def is_empty(self) -> bool:
        answer = aws_call(self.s3.list_object_versions, Bucket=self.desired.bucket, MaxKeys=1)
        return not (answer.get("Versions") or answer.get("DeleteMarkers"))

    # --- writing ---

    def create(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.desired.bucket}
        region = self.s3.meta.region_name
        if region and region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            aws_call(self.s3.create_bucket, **kwargs)
        except StorageError as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    def empty(self) -> None:
        bucket = self.desired.bucket
        for page in aws_pages(self.s3, "list_multipart_uploads", Bucket=bucket):
            for upload in page.get("Uploads", []):
                aws_call(
                    self.s3.abort_multipart_upload,
                    Bucket=bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
        for page in aws_pages(self.s3, "list_object_versions", Bucket=bucket):
            objects = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
            ]
            if objects:  # a page holds at most 1,000 entries, DeleteObjects' limit
                answer = aws_call(
                    self.s3.delete_objects,
                    Bucket=bucket,
                    Delete={"Objects": objects, "Quiet": True},
                )
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageError(f"cannot delete {first['Key']}: {first.get('Message')}")
