"""A version's ``manifest.json``: what one ``upload_dir`` put in S3, written after every file.

It lists each file (name, key, size, content type, kind, the file's SHA-256 in hex as
``sha256sum`` prints it, what S3 holds as its checksum, ETag, version id, parts and part size) and
the run id. It is uploaded last, and only once every file is in S3, so a version with a manifest
is complete; Convex is told of it in the run's last ``uploads:report`` (its ``manifests``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from s3convex.storage.results import UploadedFile

SCHEMA = "s3convex.manifest/1"


def manifest_document(*, run_id: str, bucket: str, session_id: str, scene_id: str, version: int,
                      files: Sequence[UploadedFile], now_ms: int) -> dict[str, Any]:
    entries = [{
        "name": item.file.name, "key": item.key, "size": item.size,
        "contentType": item.file.content_type, "kind": item.file.kind, "sha256": item.sha256_hex,
        "s3Checksum": ({"algorithm": "SHA256", "type": item.checksum_type,
                        "value": item.s3_checksum} if item.s3_checksum else
                       {"algorithm": "CRC64NVME", "type": "FULL_OBJECT",
                        "value": item.s3_crc64nvme} if item.s3_crc64nvme else None),
        "etag": item.etag, "versionId": item.version_id, "parts": item.parts,
        "partSize": item.part_size,
    } for item in sorted(files, key=lambda uploaded: uploaded.file.name)]
    return {
        "schema": SCHEMA, "runId": run_id, "bucket": bucket, "sessionId": session_id,
        "sceneId": scene_id, "version": version,
        "createdAt": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds"),
        "files": entries,
        "totals": {"files": len(entries), "bytes": sum(entry["size"] for entry in entries)},
    }


def manifest_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
