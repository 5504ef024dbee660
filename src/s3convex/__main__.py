"""``python -m s3convex`` — the command line without the console script."""

from s3convex.consumer.cli import main

main()
