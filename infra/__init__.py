"""Provisioning of the S3 → SQS wiring the daemon consumes (``s3convex infra up|status|down``).

- :mod:`infra.desired` — what should exist, as plain data derived from the settings;
- :mod:`infra.provision` — checks what exists and fixes only the differences (boto3);
- :mod:`infra.cli` — the typer sub-app printing tables or JSON.

The same code serves real AWS, LocalStack (its ready hook runs ``python -m infra up``) and moto.
"""

from infra.desired import Desired, InfraSettings, load_infra_settings
from infra.provision import DownReport, Plan, Provisioner, Step, UpReport

__all__ = [
    "Desired",
    "DownReport",
    "InfraSettings",
    "Plan",
    "Provisioner",
    "Step",
    "UpReport",
    "load_infra_settings",
]
