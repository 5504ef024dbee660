"""Provisioning: the S3 → SQS wiring the daemon needs, as a library.

The command line (``s3convex infra up|status|down``) is :mod:`s3convex.consumer.ops.infra`, with
every other operator command; this package has none of its own, so it never imports upward.

- :mod:`s3convex.infra.desired` — what should exist, as plain data derived from the settings;
- :mod:`s3convex.infra.provision` — checks what exists and fixes only the differences (boto3), returning
  a :class:`~s3convex.infra.plan.Plan`; works against AWS, LocalStack (whose ready hook runs
  ``python -m s3convex infra up``) and moto alike. The per-resource checks and fixes are in
  :mod:`s3convex.infra.buckets`, :mod:`s3convex.infra.queues` and :mod:`s3convex.infra.notification`; clients and error
  mapping in :mod:`s3convex.infra.aws`; the plain-data reports in :mod:`s3convex.infra.plan`.

Nothing is imported here, so importing one module does not pull in the others.
"""
