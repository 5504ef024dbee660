"""The local Convex server: a development tool (like ``localstack/``), never shipped.

``server.ts`` runs this project's own ``convex/`` functions through convex-test and speaks
Convex's HTTP API; :mod:`convex_local.launcher` starts and stops it from Python for the tests,
the benchmarks and ``scripts/local-stack.sh``.
"""
