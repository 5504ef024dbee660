# The two commands of the README, and a few more for development.
.PHONY: run test stack-up stack-down bench bench-upload lock clean

run:            ## install, start LocalStack + the local Convex server, provision, run the daemon
	bash scripts/run-local.sh

test:           ## the whole suite: tsc + vitest, ruff, lint-imports, pyright, pytest on moto, end-to-end on LocalStack
	bash scripts/test.sh

stack-up:       ## the local stack without the daemon
	bash scripts/local-stack.sh up

stack-down:
	bash scripts/local-stack.sh down

bench:          ## consumer benchmark on LocalStack (see bench/README.md)
	.venv/bin/python bench/consumer_bench.py

bench-upload:   ## S3Storage uploads vs s3transfer and naive put_object (see bench/README.md)
	.venv/bin/python bench/upload_bench.py $(ARGS)

# requirements.lock: every package of pyproject.toml's dependencies and its `test` extra, pinned
# exactly with hashes, pip and setuptools included (--allow-unsafe); scripts/setup.sh installs it
# with --require-hashes. Versions already in the lock are kept; to move one on:
# make lock ARGS="--upgrade-package httpx" (or ARGS=--upgrade for all). The index comes from pip's
# own configuration and is never written into the file.
lock:           ## regenerate requirements.lock from pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" .venv/bin/pip-compile --quiet --extra test \
	  --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	  $(ARGS) -o requirements.lock pyproject.toml

clean:
	bash scripts/local-stack.sh down || true
	rm -rf .venv node_modules .localstack .state
