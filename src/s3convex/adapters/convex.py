"""An asyncio client for Convex's HTTP API (``/api/query``, ``/api/mutation``, ``/api/action``).

Why not the PyPI ``convex`` package on the hot path: its calls are synchronous, hold the GIL
while waiting and have no timeout, so one silent server would freeze the daemon's event
loop. This client shares one ``httpx.AsyncClient`` pool, has explicit timeouts, and maps every
answer into :mod:`s3convex.core.errors` at this boundary — the table below, the only mapping of
httpx's errors and Convex's answers.

A call makes exactly one attempt unless the client (or the call) is given a
:class:`~s3convex.core.retrying.RetryBudget`: the daemon's applier owns the retry of its
mutations (it holds a batch through an outage), operator commands ask for a bounded one
(:meth:`ConvexClient.from_settings` with ``attempts``). Only what can succeed later is retried
(429, 5xx, network errors), never a 4xx, and ``Retry-After`` is honoured (capped at
:data:`RETRY_AFTER_CAP` seconds).

Mutations carry no idempotency key over HTTP: a retry after a timeout may apply twice, so
every mutation this project calls is idempotent by design (see ``convex/assets.ts``).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import logging
import struct
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from s3convex.core.errors import (
    ConvexForbidden,
    ConvexFunctionError,
    ConvexNotFound,
    ConvexRequestError,
    ConvexUnavailable,
    SyncError,
)
from s3convex.core.retrying import ONE_ATTEMPT, RetryBudget, with_retries
from s3convex.settings import ConvexSettings

log = logging.getLogger(__name__)

FunctionKind = Literal["query", "mutation", "action"]
RETRY_AFTER_CAP = 30.0  # seconds: a longer Retry-After is waited for this long
# The bounded retry of operator commands and library callers (``retry=BOUNDED_RETRY``, or
# ``from_settings(attempts=4)``): 4 attempts, waits of 0.05–0.1 s, 0.1–0.2 s, 0.2–0.4 s between
# them (the curve goes on doubling to 2 s for more attempts), or the Retry-After if longer.
BOUNDED_RETRY = RetryBudget(attempts=4, base=0.1, cap=2.0)

# --- the table: what Convex's answer (or httpx's failure to get one) means ------------------
# A function that ran and threw answers 200 (or 560, the JS client's code) with
# ``status: "error"``: ConvexFunctionError, whatever it threw. Any other answer that is not a
# success is a system error ``{"code", "message"}``; its HTTP status decides:
_FUNCTION_ERROR_STATUS = frozenset({200, 560})
_KIND_BY_STATUS: dict[int, type[SyncError]] = {
    401: ConvexForbidden, 403: ConvexForbidden, 404: ConvexNotFound, 429: ConvexUnavailable,
}  # any other status ≥ 500: ConvexUnavailable (503 is OCC failure or overload); below: refused
_KIND_BY_EXCEPTION: tuple[tuple[tuple[type[httpx.HTTPError], ...], type[SyncError]], ...] = (
    # timed out, refused, reset, the server hung up, a proxy failed: may pass later
    ((httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError),
     ConvexUnavailable),
    # an unsupported URL scheme, a request httpx itself refuses to send: will not pass
    ((httpx.HTTPError,), ConvexRequestError),
)


class ConvexClient:
    """``await client.mutation("assets:applyEvents", {"events": [...]})``.

    Use as an async context manager, or call :meth:`aclose`. ``retry`` is the budget of every
    call (one attempt unless given); a call's own ``retry=`` overrides it. ``transport`` is the
    single swap point for tests that need one (the suite itself talks to a real local server).
    """

    def __init__(
        self,
        url: str,
        deploy_key: SecretStr | None,
        *,
        timeout: float = 10.0,
        retry: RetryBudget = ONE_ATTEMPT,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Content-Type": "application/json", "Convex-Client": "s3convex-python"}
        if deploy_key is not None:
            headers["Authorization"] = f"Convex {deploy_key.get_secret_value()}"
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )
        self._retry = retry

    @classmethod
    def from_settings(cls, convex: ConvexSettings, *, timeout: float | None = None,
                      attempts: int = 1, max_connections: int = 32) -> ConvexClient:
        """The client for the configured deployment (CONVEX_URL, CONVEX_DEPLOY_KEY,
        CONVEX_TIMEOUT unless ``timeout`` is given): the one place one is made from settings.
        ``attempts`` > 1 tries each call that many times in all, on :data:`BOUNDED_RETRY`'s
        curve (operator commands ask for 4); the daemon keeps one attempt and retries itself."""
        return cls(convex.base_url, convex.deploy_key,
                   retry=dataclasses.replace(BOUNDED_RETRY, attempts=attempts),
                   timeout=convex.timeout if timeout is None else timeout,
                   max_connections=max_connections)

    async def __aenter__(self) -> ConvexClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, path: str, args: Mapping[str, Any] | None = None, *,
                    retry: RetryBudget | None = None) -> Any:
        return await self.call("query", path, args, retry=retry)

    async def mutation(self, path: str, args: Mapping[str, Any] | None = None, *,
                       retry: RetryBudget | None = None) -> Any:
        return await self.call("mutation", path, args, retry=retry)

    async def action(self, path: str, args: Mapping[str, Any] | None = None, *,
                     retry: RetryBudget | None = None) -> Any:
        return await self.call("action", path, args, retry=retry)

    async def call(self, kind: FunctionKind, path: str, args: Mapping[str, Any] | None, *,
                   retry: RetryBudget | None = None) -> Any:
        """Call function ``path``; ``retry`` (default: the client's budget) says how often."""
        body = {"path": path, "args": encode_value(dict(args or {})), "format": "json"}

        def retrying(attempt: int, delay: float, error: SyncError) -> None:
            log.warning("convex call failed, retrying", extra={
                "path": path, "attempt": attempt, "delay_s": round(delay, 3), "error": str(error)})

        return await with_retries(functools.partial(self._call_once, kind, path, body),
                                  retry or self._retry, on_retry=retrying)

    async def _call_once(self, kind: FunctionKind, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._http.post(f"/api/{kind}", json=body)
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, path) from exc
        return _interpret(path, response)


def map_httpx_error(exc: httpx.HTTPError, path: str) -> SyncError:
    """The error of our tree for a request to ``path`` that got no answer."""
    kind = next(kind for types, kind in _KIND_BY_EXCEPTION if isinstance(exc, types))
    if isinstance(exc, httpx.TimeoutException):
        return kind(f"timed out ({type(exc).__name__})", operation=path)
    return kind(f"{type(exc).__name__}: {exc}".removesuffix(": "), operation=path)


def _interpret(path: str, response: httpx.Response) -> Any:
    """Convex's answer: the value of a success, else the error of our tree that says what it means."""
    status = response.status_code
    payload = _json_or_none(response)
    if isinstance(payload, dict) and status in _FUNCTION_ERROR_STATUS:
        if payload.get("status") == "success":
            return decode_value(payload.get("value"))
        if payload.get("status") == "error":
            raise ConvexFunctionError(path, str(payload.get("errorMessage", "")),
                                      decode_value(payload.get("errorData")), status=status)
    if isinstance(payload, dict):
        code, message = payload.get("code"), payload.get("message")
    else:  # not Convex speaking (a proxy's page, say): its first words
        code, message = None, response.text.strip()[:200]
    kind = _KIND_BY_STATUS.get(status) or (ConvexUnavailable if status >= 500 else ConvexRequestError)
    fields: dict[str, Any] = {"operation": path, "code": str(code) if code else None, "status": status}
    if issubclass(kind, ConvexUnavailable):
        fields["retry_after"] = _retry_after(response)
    raise kind(str(message or ""), **fields)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float:
    """``Retry-After`` in seconds (its HTTP-date form is not used by Convex), capped."""
    try:
        return max(0.0, min(float(response.headers.get("retry-after", "0")), RETRY_AFTER_CAP))
    except ValueError:
        return 0.0


# --- Convex's JSON value encoding (docs: "Convex values" / JSON format) -------------------

def encode_value(value: Any) -> Any:
    """Python → Convex JSON: bytes become ``{"$bytes"}``, big ints ``{"$integer"}``.

    Plain Python ints within float64's exact range travel as JSON numbers (Convex reads them
    as ``v.number()``), which is what every function here takes.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        if abs(value) <= 2**53:
            return value
        return {"$integer": base64.b64encode(struct.pack("<q", value)).decode()}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    raise TypeError(f"cannot send {type(value).__name__} to Convex")


def decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag == "$integer":
                return struct.unpack("<q", base64.b64decode(inner))[0]
            if tag == "$bytes":
                return base64.b64decode(inner)
            if tag == "$float":
                return struct.unpack("<d", base64.b64decode(inner))[0]
        return {k: decode_value(v) for k, v in value.items()}
    return value
