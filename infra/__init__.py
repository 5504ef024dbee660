"""Provisioning and local stand-ins for the systems the daemon talks to.

The S3 → SQS wiring (``s3convex infra up|status|down``, ``python -m infra``):

- :mod:`infra.desired` — what should exist, as plain data derived from the settings;
- :mod:`infra.provision` — checks what exists and fixes only the differences (boto3), returning
  a :class:`~infra.plan.Plan`; works against AWS, LocalStack (whose ready hook runs
  ``python -m infra up``) and moto alike. The per-resource checks and fixes are in
  :mod:`infra.buckets`, :mod:`infra.queues` and :mod:`infra.notification`; clients and error
  mapping in :mod:`infra.aws`; the plain-data reports in :mod:`infra.plan`;
- :mod:`infra.cli` — the typer sub-app printing rich tables or ``--json``.

Nothing is imported here, so importing one module does not pull in the others.
"""
