#!/usr/bin/env bash
# The main job on the embedded default (sets the workspace up first when needed):
# scripted-expert demos -> BC base policy -> deployment in simulation with the scripted operator and
# recording -> retrain through /apo/retrain -> new version deployed and evaluated -> report.
# Extra arguments go to `apo demo` (e.g. --quick, --out DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source "$ROOT/scripts/env.sh"
exec apo demo "$@"
