#!/usr/bin/env bash
# Rewrites constraints.txt from the current venv (pip freeze), keeping torch at its plain pin.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
{
  echo "# Full lock of the resolved environment (pip freeze), applied as constraints at every set-up step."
  echo "# Regenerate after changing requirements*.txt: make setup && tools/lock.sh"
  "$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null \
    | grep -v -E '^-e |^regionblip' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
