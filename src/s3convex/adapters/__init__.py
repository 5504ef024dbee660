"""Adapters to the outside systems: S3 and SQS (aiobotocore), Convex's HTTP API (httpx) and its
WebSocket subscriptions (the PyPI ``convex`` client, in :mod:`~s3convex.adapters.convex_live`), URL
signing. Each maps its library's errors into :mod:`s3convex.core.errors` in one table, and
imports only the core and the settings."""
