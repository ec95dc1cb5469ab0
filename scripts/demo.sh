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

step "pinstream worker  (embeds the pins, stores them in HBase, indexes them; web on :\${PINSTREAM_WEB_PORT:-6066})"
pinstream worker --loglevel warn >demo/worker.log 2>&1 &
WORKER_PID=$!
trap 'kill $WORKER_PID 2>/dev/null || true' EXIT
python - "$PINS" <<'PY'
import sys, time, httpx
from streams.settings import load_settings
settings, want = load_settings(), int(sys.argv[1])
url = f"http://{settings.web_host}:{settings.web_port}/healthz"
deadline, last = time.monotonic() + 600, None
while time.monotonic() < deadline:
    try:
        health = httpx.get(url, timeout=2).json()
    except (httpx.HTTPError, ValueError):
        health = {}
    if health.get("index_pins", 0) >= want:
        print(f"worker ready: {health['index_pins']} pins searchable, model {health['model_version']}")
        sys.exit(0)
    if health.get("index_pins") != last:
        last = health.get("index_pins")
        print(f"  ... {last or 0}/{want} pins searchable", flush=True)
    time.sleep(2)
sys.exit("the worker did not index the pins within 10 minutes: see demo/worker.log")
PY

step "pinstream search  (an augmented copy of pin p00000005's image: cropped, rotated, recoloured; pins of one generated theme look alike, so its siblings rank beside it)"
python - <<'PY'
import io, json, numpy as np
from PIL import Image
from streams.settings import load_settings
from streams.workload.images import augment
pin = next(json.loads(line) for line in open("demo/pins.jsonl") if '"p00000005"' in line)
original = Image.open(load_settings().blob_dir / pin["image_ref"])
augment(original, np.random.default_rng(1)).save("demo/query.jpg", quality=80)
print(f"query: demo/query.jpg, from {pin['pin_id']} \"{pin['title']}\"")
PY
pinstream search demo/query.jpg -k 5

step "pinstream feed  (the home feed of a generated user, ranked from the interaction graph, with reasons)"
USER_ID=$(python -c 'import json; print(json.loads(open("demo/interactions.jsonl").readline())["user_id"])')
python - <<'PY'
# The worker's feed of the user comes once the interactions are through the graph stage.
from streams.campaigns.sampling import wait_caught_up
from streams.groups import worker_groups
from streams.settings import load_settings
settings = load_settings()
print("  ... waiting for the worker to take in the interactions", flush=True)
took = wait_caught_up(settings, worker_groups(settings), 300)
print(f"worker caught up in {took:.0f} s" if took is not None else "the worker is still behind after 5 minutes")
PY
deadline=$((SECONDS + 120))
# The feed the worker ranked and cached; a feed computed on the request (a fallback may serve it)
# is shown only when none was cached within 2 minutes.
until pinstream feed "$USER_ID" -n 10 >demo/feed.txt 2>&1 && grep -q "pins for" demo/feed.txt \
    && ! grep -q "^0 pins" demo/feed.txt && grep -q "(cache;" demo/feed.txt; do
  if [ $SECONDS -ge $deadline ]; then
    grep -q "pins for" demo/feed.txt && ! grep -q "^0 pins" demo/feed.txt \
      || { cat demo/feed.txt; echo "no feed within 2 minutes" >&2; exit 1; }
    echo "(no cached feed yet: this one was computed on the request)"
    break
  fi
  sleep 2
done
cat demo/feed.txt

step "pinstream replay --dry-run  (the plan of copying every interaction: exact offset ranges per partition)"
pinstream replay --topic pins.interactions.v1 --from beginning --to end --into graph.edges.v1 --dry-run

kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null || true
printf '\nDemo done. The stack is still running: `pinstream stack status`, `pinstream stack down`;\n'
printf 'run the worker again with `pinstream worker`, then `pinstream search IMAGE` and `pinstream feed USER`.\n'
