#!/usr/bin/env bash
# The test command: lint, type-check, then unit and integration tests against the real local
# stack (Kafka, Redis, HBase + Thrift), started here and stopped on exit.
#
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh -k redis -x     extra arguments go to pytest
#
# Needs Python 3.11, Java 17 and Maven; installs the project into .venv and redis-server with
# apt when missing. KEEP_STACK=1 leaves the stack running afterwards.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; return 1; fi
}

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $PYTHON"
  if ! "$PYTHON" -m venv "$VENV"; then
    as_root apt-get update -qq && as_root apt-get install -y -qq python3.11-venv \
      && "$PYTHON" -m venv "$VENV" || { echo "could not create $VENV" >&2; exit 1; }
  fi
fi

# Reinstall only when pyproject.toml changed since the last successful install.
stamp="$VENV/.pinstream-installed"
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || [ ! -x "$VENV/bin/pinstream" ]; then
  step "installing pinstream[dev,gen,worker] into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev,gen,worker]' \
    || { echo "pip install failed" >&2; exit 1; }
  echo "$wanted" >"$stamp"
fi

if ! command -v redis-server >/dev/null; then
  step "installing redis-server"
  as_root apt-get update -qq && as_root apt-get install -y -qq redis-server \
    || { echo "could not install redis-server" >&2; exit 1; }
fi

export PATH="$PWD/$VENV/bin:$PATH"

stop_stack() {
  if [ "${KEEP_STACK:-0}" = 1 ]; then
    echo "KEEP_STACK=1: leaving the stack running"
  else
    step "pinstream stack down"
    pinstream stack down || echo "warning: stack down failed" >&2
  fi
}
trap stop_stack EXIT

step "pinstream stack up"
pinstream stack up || { echo "the local stack did not start: see the log lines above" >&2; exit 1; }

failed=()
step "ruff check ."
ruff check . || failed+=(ruff)
step "mypy"
mypy || failed+=(mypy)
step "pytest $*"
pytest "$@" || failed+=(pytest)

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nFAILED: %s\n' "${failed[*]}"
  exit 1
fi
printf '\nall checks passed\n'
