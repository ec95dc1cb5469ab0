#!/usr/bin/env bash
# Shared set-up of the demo and test commands: a .venv with pinstream and its extras, and Debian's
# redis-server. Idempotent and quiet when everything is already there. Sourced, not run.

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
  step "installing pinstream[dev,gen,worker,vision] into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev,gen,worker,vision]' \
    || { echo "pip install failed" >&2; exit 1; }
  echo "$wanted" >"$stamp"
fi

if ! command -v redis-server >/dev/null; then
  step "installing redis-server"
  as_root apt-get update -qq && as_root apt-get install -y -qq redis-server \
    || { echo "could not install redis-server" >&2; exit 1; }
fi

export PATH="$PWD/$VENV/bin:$PATH"
