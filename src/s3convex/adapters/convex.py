"""An asyncio client for Convex's HTTP API (``/api/query``, ``/api/mutation``, ``/api/action``).

Why not the PyPI ``convex`` package on the hot path: its calls are synchronous, hold the GIL
while waiting and have no timeout, so one silent server would freeze the daemon's event
loop. This client shares one ``httpx.AsyncClient`` pool, has explicit timeouts, retries only
what can succeed later (429, 5xx, network errors) with jittered backoff, and maps every
answer into :mod:`s3convex.core.errors` at this boundary.

Mutations carry no idempotency key over HTTP: a retry after a timeout may apply twice, so
every mutation this project calls is idempotent by design (see ``convex/assets.ts``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from s3convex.core.backoff import backoff_delay
from s3convex.core.errors import ConvexFunctionError, ConvexRequestError, ConvexUnavailable

log = logging.getLogger(__name__)

FunctionKind = Literal["query", "mutation", "action"]
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Convex answers a function that threw with HTTP 560 (or 200) and ``status: "error"``.
_FUNCTION_ERROR_STATUS = frozenset({200, 560})


class ConvexClient:
    """``await client.mutation("assets:applyEvents", {"events": [...]})``.

    Use as an async context manager, or call :meth:`aclose`. ``transport`` is the single
    swap point for tests that need one (the suite itself talks to a real local server).
    """

    def __init__(
        self,
        url: str,
        deploy_key: SecretStr | None,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff_base: float = 0.1,
        backoff_cap: float = 2.0,
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
        self._attempts = max(1, attempts)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap

    async def __aenter__(self) -> ConvexClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self.call("query", path, args)

    async def mutation(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self.call("mutation", path, args)

    async def action(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self.call("action", path, args)

    async def call(self, kind: FunctionKind, path: str, args: Mapping[str, Any] | None) -> Any:
        body = {"path": path, "args": encode_value(dict(args or {})), "format": "json"}
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._call_once(kind, path, body)
            except ConvexUnavailable as exc:
                if attempt == self._attempts:
                    raise
                delay = max(backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap),
                            getattr(exc, "retry_after", 0.0))
                log.warning(
                    "convex call failed, retrying",
                    extra={"path": path, "attempt": attempt, "delay_s": round(delay, 3),
                           "error": str(exc)},
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(self, kind: FunctionKind, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._http.post(f"/api/{kind}", json=body)
        except httpx.TimeoutException as exc:
            raise ConvexUnavailable(f"{path}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ConvexUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        return _interpret(path, response)


def _interpret(path: str, response: httpx.Response) -> Any:
    payload = _json_or_none(response)
    if isinstance(payload, dict) and response.status_code in _FUNCTION_ERROR_STATUS:
        if payload.get("status") == "success":
            return decode_value(payload.get("value"))
        if payload.get("status") == "error":
            raise ConvexFunctionError(
                path, str(payload.get("errorMessage", "")), decode_value(payload.get("errorData"))
            )
    code = payload.get("code") if isinstance(payload, dict) else None
    message = payload.get("message") if isinstance(payload, dict) else None
    text = f"{path}: HTTP {response.status_code}" + (f" {code}" if code else "") + (
        f": {message}" if message else ""
    )
    if response.status_code in _RETRY_STATUS or response.status_code >= 500:
        error = ConvexUnavailable(text, status_code=response.status_code)
        error.retry_after = _retry_after(response)  # type: ignore[attr-defined]
        raise error
    raise ConvexRequestError(text, status_code=response.status_code, code=code)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", "0")), 30.0)
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
