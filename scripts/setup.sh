#!/usr/bin/env bash
# One-command set-up of the APO-ROS workspace on a fresh Debian 12 machine (or CI):
# system packages, .venv with pinned dependencies (torch first), apo_interfaces built into the venv,
# and every Python package under src/ installed editable. Idempotent: when nothing it depends on
# changed since the last successful run it returns in about a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${APO_PYTHON:-python3.11}"
TORCH_PIN="torch==2.13.0"
STAMP="$VENV/.apo-setup-stamp"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*"; }

# Everything whose change requires a re-run: this script, requirement pins, the interface
# definitions and every package manifest (so a newly added package is picked up).
fingerprint() {
  {
    echo "$TORCH_PIN"
    cat scripts/setup.sh requirements/*.txt
    find src -maxdepth 3 \( -name package.xml -o -name setup.py -o -name setup.cfg -o -name pyproject.toml \
      -o -name CMakeLists.txt -o -name '*.msg' -o -name '*.srv' \) -print | LC_ALL=C sort | while read -r f; do
      echo "$f"; cat "$f"; done
  } | sha256sum | cut -d' ' -f1
}

want="$(fingerprint)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
  log "up to date ($VENV)"
  exit 0
fi

# --- system packages -------------------------------------------------------------------------
SYSTEM_PKGS=(libosmesa6 libgl1 cmake ninja-build g++ git)
missing=()
for p in "${SYSTEM_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing system packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- virtual environment ---------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
log "installing $TORCH_PIN (CPU wheel first, so nothing pulls a CUDA build)"
"${PIP[@]}" "$TORCH_PIN"
log "installing ROS 2 wheels"
"${PIP[@]}" -r requirements/ros.txt
log "installing Python dependencies"
"${PIP[@]}" -r requirements/base.txt -r requirements/dev.txt "$TORCH_PIN"

# --- apo_interfaces (rosidl, ament_cmake) into the venv prefix --------------------------------
# The ROS wheels' exported CMake files hard-code their build container's Python paths; point them
# at this interpreter before building.
"$VENV/bin/python" - <<'PYEOF'
import glob, os, sys, sysconfig
import numpy
prefix = sys.prefix
fixes = {
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/core/include": numpy.get_include(),
}
for path in glob.glob(os.path.join(prefix, "**", "*Export*.cmake"), recursive=True):
    text = open(path).read()
    new = text
    for old, repl in fixes.items():
        new = new.replace(old, repl)
    if new != text:
        open(path, "w").write(new)
PYEOF
log "building apo_interfaces"
BUILD="$ROOT/build/apo_interfaces"
mkdir -p "$BUILD"
cmake -S src/apo_interfaces -B "$BUILD" -G Ninja -Wno-dev \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" >"$ROOT/build/apo_interfaces.cmake.log" 2>&1 \
  || { cat "$ROOT/build/apo_interfaces.cmake.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >"$ROOT/build/apo_interfaces.build.log" 2>&1 \
  || { tail -50 "$ROOT/build/apo_interfaces.build.log"; exit 1; }
cmake --install "$BUILD" >/dev/null

# --- the project's Python packages, editable ---------------------------------------------------
pkgs=()
for d in src/*/; do
  [[ -f "$d/setup.py" || -f "$d/pyproject.toml" ]] && pkgs+=(-e "$d")
done
if ((${#pkgs[@]})); then
  log "installing project packages: ${pkgs[*]//-e /}"
  "${PIP[@]}" --no-deps --no-build-isolation "${pkgs[@]}"
fi

"$VENV/bin/python" -c "import rclpy, apo_interfaces.msg, torch, robosuite" 2>/dev/null \
  || { log "post-install import check failed"; "$VENV/bin/python" -c "import rclpy, apo_interfaces.msg, torch, robosuite"; exit 1; }
echo "$want" > "$STAMP"
log "done"
