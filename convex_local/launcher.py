"""Start and stop the local Convex server (``convex_local/``, a development tool like ``localstack/``; not part of the wheel) from Python.

The server is a Node process that runs this project's own ``convex/`` functions through
convex-test and speaks Convex's HTTP API. It prints one JSON line
``{"event": "listening", "url": ...}`` once it accepts connections; we wait for that line.

:class:`DevAuth` is the Python twin of ``convex_local/dev_auth.ts`` (DEVELOPMENT ONLY): a key
pair made in memory, the ``AUTH_*`` environment ``convex/auth.config.ts`` reads (the JWKS as a
``data:`` URI), and RS256 tokens signed with it, deliberately wrong ones included::

    auth = DevAuth.generate()
    server = start_local_convex(admin_key, env=auth.env())
    token = auth.token("alice")          # a str; token.principal == auth.principal("alice")
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVER_ENTRY = PROJECT_ROOT / "convex_local" / "server.ts"


class LocalConvexError(RuntimeError):
    pass


@dataclass
class LocalConvex:
    url: str
    admin_key: str
    process: subprocess.Popen[str]
    stderr_tail: list[str] = field(default_factory=list)
    stderr_reader: threading.Thread | None = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server saves its state and exits 0), SIGKILL after ``timeout``; returns
        once its stderr is read to the end (``stderr_tail`` and ``log_path`` are complete)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.stderr_reader is not None:
            self.stderr_reader.join(5)


def start_local_convex(
    admin_key: str,
    *,
    port: int = 0,
    state_file: Path | None = None,
    env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 60.0,
) -> LocalConvex:
    """Start the server; ``env`` (``extra_env`` is its older name, both may be given) is added
    to this process's environment, e.g. :meth:`DevAuth.env` for JWT verification.

    The last 200 lines of its stderr are kept in ``stderr_tail``; ``log_path`` also gets all
    of them (appended, so a restarted server can share the file)."""
    tsx = PROJECT_ROOT / "node_modules" / ".bin" / "tsx"
    if not tsx.exists():
        raise LocalConvexError("node_modules missing: run `npm ci` in the project root first")
    process_env = {
        **os.environ,
        "CONVEX_LOCAL_PORT": str(port),
        "CONVEX_LOCAL_ADMIN_KEY": admin_key,
        **({"CONVEX_LOCAL_STATE": str(state_file)} if state_file else {}),
        **(extra_env or {}),
        **(env or {}),
    }
    process_env["NODE_OPTIONS"] = _node_options(process_env.get("NODE_OPTIONS", ""))
    process = subprocess.Popen(
        [shutil.which("node") or "node", str(tsx), str(SERVER_ENTRY)],
        cwd=PROJECT_ROOT,
        env=process_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    tail: list[str] = []
    stderr_reader = threading.Thread(target=_collect, args=(process.stderr, tail, log_path),
                                     daemon=True)
    stderr_reader.start()
    url = _await_listening(process, timeout)
    if url is None:
        process.kill()
        raise LocalConvexError("local Convex server did not start: " + "".join(tail[-20:]))
    threading.Thread(target=_collect, args=(process.stdout, None), daemon=True).start()
    return LocalConvex(url=url, admin_key=admin_key, process=process, stderr_tail=tail,
                       stderr_reader=stderr_reader)


def _await_listening(process: subprocess.Popen[str], timeout: float) -> str | None:
    result: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "listening":
                result.append(str(event["url"]))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else None


# The server allocates a short-lived copy of every document a function reads or writes (the
# Convex value <-> JSON boundary): with a 64 MiB young generation (V8's default is 16 MiB) a
# 1,000-document mutation scavenges less often; side by side, 10-20 % less server CPU per
# `lifecycle:markDeleted`.
NODE_TUNING = "--max-semi-space-size=64"


def _node_options(existing: str) -> str:
    """NODE_OPTIONS for the server: the caller's own options win (they come last)."""
    return f"{NODE_TUNING} {existing}".strip()


def _collect(stream, sink: list[str] | None, log_path: Path | None = None) -> None:
    log = log_path.open("a", encoding="utf-8") if log_path is not None else None
    try:
        for line in stream:
            if sink is not None:
                sink.append(line)
                del sink[:-200]
            if log is not None:
                log.write(line)
                log.flush()
    finally:
        if log is not None:
            log.close()


# --- development JWTs ------------------------------------------------------------------------

DEV_ISSUER = "https://convex-local.dev-auth.invalid"  # the same as convex_local/dev_auth.ts
DEV_APPLICATION_ID = "convex-local-dev"
BadTokenKind = Literal["expired", "wrong_issuer", "wrong_audience", "bad_signature"]
BAD_TOKEN_KINDS: tuple[BadTokenKind, ...] = (
    "expired", "wrong_issuer", "wrong_audience", "bad_signature")


class DevToken(str):
    """A signed JWT (the string itself) that also knows whom it names."""

    subject: str
    principal: str  # Convex's tokenIdentifier for it: ``<iss>|<sub>``

    def __new__(cls, jwt: str, *, subject: str, principal: str) -> DevToken:
        token = super().__new__(cls, jwt)
        token.subject = subject
        token.principal = principal
        return token


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64url(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class DevAuth:
    """DEVELOPMENT ONLY: an RS256 key pair held in memory, never written anywhere.

    Needs ``cryptography`` (installed with the test extras); imported only when used.
    """

    private_key: Any
    kid: str
    issuer: str = DEV_ISSUER
    application_id: str = DEV_APPLICATION_ID

    @classmethod
    def generate(cls, *, issuer: str = DEV_ISSUER,
                 application_id: str = DEV_APPLICATION_ID) -> DevAuth:
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key, f"dev-{secrets.token_hex(6)}", issuer, application_id)

    def jwks(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "n": _int_b64url(numbers.n), "e": _int_b64url(numbers.e),
                          "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def env(self) -> dict[str, str]:
        """What ``convex/auth.config.ts`` reads (``convex/model/authConfig.ts``)."""
        jwks = base64.b64encode(json.dumps(self.jwks()).encode()).decode()
        return {
            "AUTH_ISSUER": self.issuer,
            "AUTH_APPLICATION_ID": self.application_id,
            "AUTH_ALGORITHM": "RS256",
            "AUTH_JWKS": f"data:application/json;base64,{jwks}",
        }

    def principal(self, subject: str) -> str:
        """The ``tokenIdentifier`` Convex derives from this issuer's token for ``subject``."""
        return f"{self.issuer}|{subject}"

    def token(self, subject: str, *, ttl_seconds: float = 3600,
              claims: dict[str, Any] | None = None, issuer: str | None = None,
              audience: str | list[str] | None = None, signing_key: Any = None) -> DevToken:
        """A token for ``subject``; the keyword arguments make deliberately wrong ones."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        ttl = int(ttl_seconds)
        payload = {
            **(claims or {}),
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience if audience is not None else self.application_id,
            "iat": now + ttl - 60 if ttl < 0 else now,
            "exp": now + ttl,
        }
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(payload, separators=(",", ":")).encode()))
        key = signing_key or self.private_key
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return DevToken(f"{signing_input}.{_b64url(signature)}", subject=subject,
                        principal=f"{payload['iss']}|{subject}")

    def bad_token(self, kind: BadTokenKind, subject: str = "mallory") -> DevToken:
        """A token the server must refuse: ``expired`` (2 min ago, past the 5 s leeway),
        ``wrong_issuer``, ``wrong_audience``, or ``bad_signature`` (our kid, another key)."""
        if kind == "expired":
            return self.token(subject, ttl_seconds=-120)
        if kind == "wrong_issuer":
            return self.token(subject, issuer="https://someone-else.dev-auth.invalid")
        if kind == "wrong_audience":
            return self.token(subject, audience="another-app")
        if kind == "bad_signature":
            return self.token(subject, signing_key=DevAuth.generate().private_key)
        raise ValueError(f"unknown bad token kind {kind!r}")
