#!/usr/bin/env bash
# Run the whole test suite (sets the workspace up first when needed). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# The upstream ROS 2 tools for tests/ros2_tools (near-instant once installed). Exit 3: no tool sources
# and no ROS 2 install here, so those tests skip; any other failure fails the run.
bash scripts/install_ros2_tools.sh || [[ $? -eq 3 ]]
source "$ROOT/scripts/env.sh"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
