# The two commands of the README, and a few more for development.
.PHONY: run test stack-up stack-down bench clean

run:            ## install, start LocalStack + the local Convex server, provision, run the daemon
	bash scripts/run-local.sh

test:           ## the whole suite: vitest, pytest on moto, end-to-end on LocalStack
	bash scripts/test.sh

stack-up:       ## the local stack without the daemon
	bash scripts/local-stack.sh up

stack-down:
	bash scripts/local-stack.sh down

bench:          ## consumer benchmark on LocalStack (see bench/README.md)
	.venv/bin/python bench/consumer_bench.py

clean:
	bash scripts/local-stack.sh down || true
	rm -rf .venv node_modules .localstack .state
