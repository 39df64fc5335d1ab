# edge-agent: build, run against a local broker, test, lint, bench.
# Everything runs from the repository root: the relative paths in mosquitto/mosquitto.conf and
# deploy/edge-agent.dev.yaml (both under .run/) are relative to it.

# Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH.
export PATH := $(PATH):/usr/sbin:/sbin

.PHONY: build run test lint bench clean

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

clean:
	cargo clean
	rm -rf .run bench-out
