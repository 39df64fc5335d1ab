# edge-agent: build, run against a local broker, test, lint, bench.
# Everything runs from the repository root: the relative paths in mosquitto/mosquitto.conf and
# deploy/edge-agent.dev.yaml (both under .run/) are relative to it.

# Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH.
export PATH := $(PATH):/usr/sbin:/sbin

# The package version, for the image tag and its labels.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
# The Dockerfile linter, when there is one (.ci/run installs it from PyPI into target/).
HADOLINT ?= $(shell command -v hadolint)

.PHONY: build run test lint bench clean docker deploy-check

build:
	cargo build --release

# mosquitto runs in its own session (setsid) so that Ctrl-C reaches only the agent: the agent
# shuts down first, publishing its `down` health to a broker that is still there, and the EXIT
# trap then stops the broker. The INT/TERM trap keeps the shell alive until the agent has exited.
run: build
	mkdir -p .run/mosquitto .run/edge-agent .run/bridges
	setsid mosquitto -c mosquitto/mosquitto.conf & broker=$$!; \
	trap 'kill $$broker 2>/dev/null; wait $$broker 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	cargo run --release -- --config deploy/edge-agent.dev.yaml run

# The integration tests start their own mosquitto on free ports.
test:
	cargo test --all-targets

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

# `make bench ONLY=files` runs only the file transfer figures.
bench:
	cargo build --release --bin edge-agent
	BENCH_ONLY=$(ONLY) cargo run --release --example bench

# The container image (deploy/docker/Dockerfile), tagged with the version of Cargo.toml.
docker:
	@docker info >/dev/null 2>&1 || { echo "make docker: no Docker engine is reachable (docker info failed): start one, or set DOCKER_HOST" >&2; exit 1; }
	docker build -f deploy/docker/Dockerfile -t edge-agent:$(VERSION) \
		--build-arg VERSION=$(VERSION) \
		--build-arg SOURCE="$$(git config --get remote.origin.url || true)" \
		--build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || true)" .

# What can be checked without a Docker engine: the compose file (docker-compose v1 or the compose
# plugin), the image tag and version it shares with Cargo.toml, and the Dockerfile (hadolint).
deploy-check:
	@if command -v docker-compose >/dev/null; then \
		docker-compose -f deploy/docker-compose.yml config -q; \
	elif docker compose version >/dev/null 2>&1; then \
		docker compose -f deploy/docker-compose.yml config -q; \
	else \
		echo "make deploy-check: neither docker-compose nor the docker compose plugin is installed" >&2; exit 1; \
	fi
	@echo "deploy-check: deploy/docker-compose.yml is valid"
	@grep -qx '    image: edge-agent:$(VERSION)' deploy/docker-compose.yml || { echo "deploy-check: deploy/docker-compose.yml should build image edge-agent:$(VERSION) (Cargo.toml's version)" >&2; exit 1; }
	@grep -qx 'ARG VERSION=$(VERSION)' deploy/docker/Dockerfile || { echo "deploy-check: deploy/docker/Dockerfile should default to ARG VERSION=$(VERSION) (Cargo.toml's version)" >&2; exit 1; }
	@if [ -n "$(HADOLINT)" ]; then \
		$(HADOLINT) deploy/docker/Dockerfile && echo "deploy-check: hadolint accepts deploy/docker/Dockerfile"; \
	else \
		echo "deploy-check: hadolint is not installed; deploy/docker/Dockerfile not linted"; \
	fi

clean:
	cargo clean
	rm -rf .run bench-out
