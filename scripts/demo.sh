#!/usr/bin/env bash
# The demo: a fresh machine to pins and interactions flowing through Kafka as Avro, end to end.
#
#   ./scripts/demo.sh            set up, start the stack, generate, publish, read back
#
# Leaves the stack running so that you can explore (`pinstream --help`); stop it with
# `pinstream stack down`. Generated files go to demo/ and the images to blobs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/setup.sh
. scripts/setup.sh

SEED=${SEED:-7}
USERS=${USERS:-60}
PINS=${PINS:-300}
mkdir -p demo

step "pinstream stack up  (Kafka, Redis, HBase + Thrift from the project's own files)"
pinstream stack up

step "pinstream topics apply  (the catalogue; idempotent)"
pinstream topics apply

step "pinstream gen pins  ($PINS pins of $USERS users, real and drawn images into blobs/)"
pinstream gen pins --seed "$SEED" --users "$USERS" --pins "$PINS" --out demo/pins.jsonl \
  --truth demo/truth.json

step "pinstream produce pins  (a backfill: the per-user rate limit is off with --rate-limit 0)"
pinstream produce pins demo/pins.jsonl --rate-limit 0

step "pinstream gen interactions + produce"
pinstream gen interactions --seed "$SEED" --users "$USERS" --pins "$PINS" --out demo/interactions.jsonl
pinstream produce interactions demo/interactions.jsonl

step "bad input is reported by line and does not stop good lines (exit code 1 expected)"
{
  head -n 2 demo/interactions.jsonl
  echo '{"user_id": "u1", "pin_id": "p1", "action": "teleport", "session_id": "s"}'
  echo 'not json at all'
  sed -n 3p demo/interactions.jsonl
} >demo/mixed.jsonl
if pinstream produce interactions demo/mixed.jsonl; then
  echo "expected a failure exit code for the bad lines" >&2; exit 1
fi

step "pinstream tail  (decoded Avro back as JSON)"
pinstream tail pins.interactions.v1 --from-beginning --max 3 --idle-timeout 10
pinstream tail pins.created.v1 --from-beginning --max 1 --idle-timeout 10

step "pinstream topics list"
pinstream topics list

step "pinstream replay --dry-run  (the plan of copying every interaction: exact offset ranges per partition)"
pinstream replay --topic pins.interactions.v1 --from beginning --to end --into graph.edges.v1 --dry-run

printf '\nDemo done. The stack is still running: `pinstream stack status`, `pinstream stack down`.\n'
