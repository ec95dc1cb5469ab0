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


# shellcheck source=scripts/setup.sh
. scripts/setup.sh


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
