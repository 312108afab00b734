#!/usr/bin/env bash
# The real `openai` package (from PyPI, into its own virtual environment under target/) against
# a running Marill gateway. Usage: scripts/check-openai.sh BASE_URL MODEL EXPECTED_TEXT
# (see scripts/check-openai.py). It never skips: no python3, no venv or no reachable PyPI is a
# failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${MARILL_OPENAI_VENV:-$root/target/openai-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "openai>=1.40,<3"
fi
exec "$venv/bin/python" "$root/scripts/check-openai.py" "$@"
