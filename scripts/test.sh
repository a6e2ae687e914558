#!/usr/bin/env bash
# Run the whole test suite (sets the workspace up first when needed). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source "$ROOT/scripts/env.sh"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
