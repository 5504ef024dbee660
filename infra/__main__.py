"""``python -m infra up|status|down`` — the infra CLI without the project's console script."""

from infra.cli import main

main()
