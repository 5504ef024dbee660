"""Operator tools: inspect and replay the DLQ, reconcile S3 with Convex, check health, read assets."""
