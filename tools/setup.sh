#!/usr/bin/env bash
# Create ./.venv from requirements-lock.txt and install detnorm into it (editable).
# Idempotent: does nothing when the venv already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.detnorm-lock
want=$(sha256sum requirements-lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "detnorm: creating .venv from requirements-lock.txt (about 2 minutes the first time)" >&2
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-lock.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp"
