#!/usr/bin/env bash
# Install the upstream ROS 2 Python tools (launch, launch_ros + ros2launch, ros2cli, launch_pytest,
# rosidl_runtime_py, composition_interfaces) from their source tarballs, plus colcon and a pytest
# that launch_pytest loads under, into .ros2-tools/ inside the repo: a stand-in for /opt/ros/<distro>
# on a machine with only the ROS 2 PyPI wheels. Source scripts/ros2_tools_env.sh afterwards.
#
# Sources: $APO_ROS2_TOOLS_SRC when set, else ../shared/vendor/ros2-tools next to the repo (tarballs
# listed in its SOURCES.txt). With a ROS 2 install sourced (ROS_DISTRO set, `ros2` on PATH) the
# system's tools are used and only the launch_pytest pytest is installed.
# Exit codes: 0 installed / up to date, 3 no sources and no ROS 2 install (nothing to do: the ros2_tools
# tests skip), 1 failure, also for no sources in CI (CI=true) or with APO_REQUIRE_ROS2_TOOLS set.
# Idempotent: a stamp holds the checksum of the tarballs, the pins, this script and the venv's ROS 2
# wheel pins (composition_interfaces is built against them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
OVERLAY="$ROOT/.ros2-tools"
PINS="$ROOT/requirements/ros2-tools.txt"

log() { printf '[ros2-tools] %s\n' "$*"; }
die() { printf '[ros2-tools] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no project venv at $VENV: run scripts/setup.sh first"

# One install at a time (parallel test workers may call this too).
mkdir -p "$OVERLAY"
exec 9>"$OVERLAY/.lock"
flock 9

# The pins of one "# [group]" section of requirements/ros2-tools.txt.
pins_of() {
  awk -v want="# [$1]" '
    /^# \[/ { on = (index($0, want) == 1); next }
    on && NF && $1 !~ /^#/ { print $1 }' "$PINS"
}

pip_target() {  # pip_target DIR GROUP: the group's pins, alone, into DIR
  local dir="$1" group="$2"
  mapfile -t reqs < <(pins_of "$group")
  ((${#reqs[@]})) || die "no pins for [$group] in $PINS"
  "$PY" -m pip install --disable-pip-version-check -q --no-deps --target "$dir" "${reqs[@]}" \
    >"$OVERLAY/pip-$group.log" 2>&1 || { tail -40 "$OVERLAY/pip-$group.log"; die "pip install of [$group] failed"; }
}

system_ros=false
if [[ -n "${ROS_DISTRO:-}" ]] && command -v ros2 >/dev/null 2>&1; then
  system_ros=true
fi

SRC=""
if [[ -n "${APO_ROS2_TOOLS_SRC:-}" ]]; then
  [[ -d "$APO_ROS2_TOOLS_SRC" ]] || die "APO_ROS2_TOOLS_SRC=$APO_ROS2_TOOLS_SRC is not a directory"
  SRC="$(cd "$APO_ROS2_TOOLS_SRC" && pwd)"
elif [[ -d "$ROOT/../shared/vendor/ros2-tools" ]]; then
  SRC="$(cd "$ROOT/../shared/vendor/ros2-tools" && pwd)"
fi

if $system_ros; then
  want="system-$ROS_DISTRO-$(cat "$PINS" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
elif [[ -z "$SRC" ]]; then
  why="no ROS 2 tool sources (set APO_ROS2_TOOLS_SRC or provide ../shared/vendor/ros2-tools) and no ROS 2 install sourced"
  # In CI (CI=true) or with APO_REQUIRE_ROS2_TOOLS set the tools are required: fail there, never skip.
  if [[ "${CI:-}" == "true" || -n "${APO_REQUIRE_ROS2_TOOLS:-}" ]]; then
    die "$why; required here (CI=${CI:-} APO_REQUIRE_ROS2_TOOLS=${APO_REQUIRE_ROS2_TOOLS:-})"
  fi
  log "$why"
  exit 3
else
  [[ -f "$SRC/SOURCES.txt" ]] || die "$SRC has no SOURCES.txt"
  compgen -G "$SRC/*.tar.gz" >/dev/null || die "$SRC has no *.tar.gz tarballs"
  want="$( { sha256sum "$SRC"/*.tar.gz | sed "s#$SRC/##"; cat "$SRC/SOURCES.txt" "$PINS" "${BASH_SOURCE[0]}"; echo "$PY";
    cat "$ROOT/requirements/ros.txt" 2>/dev/null || true; } \
    | sha256sum | cut -d' ' -f1)"
fi
STAMP="$OVERLAY/.stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  log "up to date ($OVERLAY)"
  exit 0
fi

# Start clean: a half-finished earlier run leaves no stamp and is redone from scratch.
find "$OVERLAY" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
touch "$OVERLAY/COLCON_IGNORE"  # a `colcon build` of the workspace must not pick up the tools' sources

if ! $system_ros; then
  # --- sources (checked before anything is downloaded) ------------------------------------------
  log "unpacking $SRC"
  mkdir -p "$OVERLAY/src"
  for tarball in "$SRC"/*.tar.gz; do tar xzf "$tarball" -C "$OVERLAY/src"; done
  S="$OVERLAY/src"
  for dir in launch launch_ros ros2cli rosidl_runtime_py rcl_interfaces; do
    [[ -d "$S/$dir" ]] || die "$SRC has no $dir tarball (SOURCES.txt lists launch, launch_ros, ros2cli, rosidl_runtime_py, rcl_interfaces)"
  done
fi

log "pytest for launch_pytest -> $OVERLAY/pytest7"
pip_target "$OVERLAY/pytest7" pytest7

if $system_ros; then
  log "using the system's ROS 2 tools (ROS_DISTRO=$ROS_DISTRO, $(command -v ros2))"
  echo "$want" > "$STAMP"
  exit 0
fi

PY_PACKAGES=(
  "$S"/launch/{launch,launch_xml,launch_yaml,launch_testing,launch_pytest}
  "$S"/launch_ros/{launch_ros,launch_testing_ros,ros2launch}
  "$S"/ros2cli/{ros2cli,ros2pkg,ros2run,ros2node,ros2topic,ros2service,ros2param,ros2interface,ros2action,ros2lifecycle,ros2component,ros2multicast}
  "$S"/rosidl_runtime_py
)

# --- overlay prefix: the tools and their PyPI runtime deps --------------------------------------
# --no-deps everywhere: a --prefix install of something the venv already has would replace the venv's copy.
PREFIX="$OVERLAY/prefix"
log "installing ${#PY_PACKAGES[@]} Python packages + $(pins_of overlay | tr '\n' ' ')into $PREFIX"
mapfile -t overlay_pins < <(pins_of overlay)
"$PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation --prefix "$PREFIX" \
  "${overlay_pins[@]}" "${PY_PACKAGES[@]}" >"$OVERLAY/pip.log" 2>&1 || { tail -40 "$OVERLAY/pip.log"; die "pip install failed"; }

# composition_interfaces (launch_ros imports it): rosidl + ament_cmake, built like apo_interfaces.
log "building composition_interfaces"
AMENT_PREFIX_PATH="$PREFIX:$VENV" cmake -S "$S/rcl_interfaces/composition_interfaces" -B "$OVERLAY/build/composition_interfaces" -G Ninja -Wno-dev \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_PREFIX_PATH="$PREFIX;$VENV" -DCMAKE_INSTALL_PREFIX="$PREFIX" \
  -DPython3_EXECUTABLE="$PY" >"$OVERLAY/cmake.log" 2>&1 || { tail -40 "$OVERLAY/cmake.log"; die "cmake configure failed"; }
cmake --build "$OVERLAY/build/composition_interfaces" -j "$(nproc)" >>"$OVERLAY/cmake.log" 2>&1 \
  || { tail -40 "$OVERLAY/cmake.log"; die "composition_interfaces build failed"; }
cmake --install "$OVERLAY/build/composition_interfaces" >>"$OVERLAY/cmake.log" 2>&1 || die "cmake install failed"

# --- colcon with its own setuptools -------------------------------------------------------------
log "installing colcon -> $OVERLAY/colcon"
pip_target "$OVERLAY/colcon" colcon
mkdir -p "$OVERLAY/bin"
cat > "$OVERLAY/bin/colcon" <<'EOF'
#!/usr/bin/env bash
# colcon with its own packages (setuptools < 80 for colcon-core 0.21.3) first on its PYTHONPATH.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$here/colcon${PYTHONPATH:+:$PYTHONPATH}"
exec "$here/colcon/bin/colcon" "$@"
EOF
chmod +x "$OVERLAY/bin/colcon"

# --- check it works the way the tests use it -----------------------------------------------------
log "checking the installed tools"
(
  # shellcheck source=/dev/null
  source "$ROOT/scripts/env.sh"
  # shellcheck source=/dev/null
  source "$ROOT/scripts/ros2_tools_env.sh"
  set -e
  "$PY" -c "import launch, launch_ros, launch_pytest, ros2cli, composition_interfaces.srv, rosidl_runtime_py"
  ros2 pkg prefix composition_interfaces >/dev/null
  ros2 launch --help >/dev/null
  colcon --help >/dev/null
) || die "the installed tools do not run (see the messages above)"

echo "$want" > "$STAMP"
log "done: source scripts/ros2_tools_env.sh (after scripts/env.sh) to use ros2, colcon and launch_pytest"
