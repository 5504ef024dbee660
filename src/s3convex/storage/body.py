"""The body of one request (a whole-file PUT or one part), which counts the bytes it sends.

A body is read from disk once, into a buffer of exactly its size, and sent from memory; its
SHA-256 travels in the request's header, so it must be known before the first byte is sent.

Progress is counted as the HTTP layer reads the body (aiohttp, 256 KiB at a time), not as
botocore reads it to sign it: a body counts only once armed, and :func:`arm_before_send` (a
botocore ``before-send`` handler on the storage's S3 client) arms it just before the request
leaves. A rewind after bytes were counted — botocore resending the request after a 5xx, or a
retry of ours — takes them back, so the bytes of a retried request are never counted twice.
When the request completes, :meth:`ProgressBody.settle` counts whatever was not seen (a body
wrapped by botocore is read elsewhere), so a finished body has counted exactly its size; a
failed one, :meth:`ProgressBody.abandon`, exactly zero.

Signing: SigV4 over plain http (LocalStack, MinIO inside a cluster) makes botocore hash every
body with SHA-256 for the signature, on the event loop's thread, although ours already carries
the SHA-256 of those same bytes in a signed ``x-amz-checksum-sha256`` header that S3 verifies.
:func:`skip_payload_hash` (a ``before-sign`` handler) sends such a request as
``UNSIGNED-PAYLOAD``, which is what botocore itself does over https whenever a checksum header is
present: a body changed on the way no longer matches the signed checksum and S3 refuses it
(``BadDigest``), so nothing is lost but a third pass over the bytes (measured: ~0.6 CPU-s per
GiB, a third of the uploader's CPU). A request without our checksum header is signed as before.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

ProgressCallback = Callable[[int], None]  # bytes sent since the last call; negative: taken back


class ProgressBody(io.BytesIO):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self._report: ProgressCallback | None = None
        self._armed = False
        self._counted = 0
        self._thread = threading.get_ident()
        if size:
            # One allocation of the exact size, filled in place by :meth:`fill`: no copy.
            super().seek(size - 1)
            self.write(b"\0")
            super().seek(0)

    def fill(self, read_into: Callable[[memoryview], int]) -> memoryview:
        """Fill the buffer through ``read_into`` (a file's ``readinto``); the filled view, which
        the caller releases. Raises EOFError if the source ends early."""
        view = self.getbuffer()
        filled = 0
        while filled < self.size:
            count = read_into(view[filled:])
            if not count:
                view.release()
                raise EOFError(f"the file ended {self.size - filled} bytes early")
            filled += count
        return view

    def bind(self, report: ProgressCallback) -> None:
        """Report counted bytes to ``report``; called on the event loop's thread."""
        self._report = report
        self._thread = threading.get_ident()

    def arm(self) -> None:
        """The request is about to be sent: count what is read from now on."""
        if threading.get_ident() == self._thread:
            self._armed = True

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self._armed and chunk:
            self._count_to(self.tell())
        return chunk

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        moved = super().seek(position, whence)
        if self._armed and moved < self._counted:  # sent before, being sent again
            self._armed = False
            self._count_to(0)
        return moved

    def settle(self) -> None:
        """The request succeeded: exactly ``size`` bytes counted."""
        self._armed = False
        self._count_to(self.size)

    def abandon(self) -> None:
        """The request failed: nothing counted."""
        self._armed = False
        self._count_to(0)

    def _count_to(self, position: int) -> None:
        delta, self._counted = position - self._counted, position
        if delta and self._report is not None and threading.get_ident() == self._thread:
            self._report(delta)
        elif delta and threading.get_ident() != self._thread:
            self._counted -= delta  # read off the loop's thread: settle() counts it instead


def arm_before_send(request: Any, **_: Any) -> None:
    """botocore ``before-send`` handler: arm a :class:`ProgressBody` about to be sent. Returns
    None, so botocore sends the request itself."""
    body = getattr(request, "body", None)
    if isinstance(body, ProgressBody):
        body.arm()


BEFORE_SEND_EVENTS = ("before-send.s3.PutObject", "before-send.s3.UploadPart")
BEFORE_SIGN_EVENTS = ("before-sign.s3.PutObject", "before-sign.s3.UploadPart")
CHECKSUM_HEADER = "x-amz-checksum-sha256"


def skip_payload_hash(request: Any, **_: Any) -> None:
    """botocore ``before-sign`` handler: a :class:`ProgressBody` whose SHA-256 travels in the
    signed checksum header is not hashed again for the signature (the module's "Signing")."""
    if isinstance(getattr(request, "body", None), ProgressBody) and CHECKSUM_HEADER in request.headers:
        config = request.context.get("client_config")
        if not isinstance(config, _UnsignedPayload):
            request.context["client_config"] = _UnsignedPayload(config)


class _UnsignedPayload:
    """The client's config, for one request, with ``s3.payload_signing_enabled`` off — the
    setting botocore's S3 signer reads; every other attribute is the client's own."""

    def __init__(self, config: Any) -> None:
        self._config = config
        self.s3 = {**(getattr(config, "s3", None) or {}), "payload_signing_enabled": False}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)
