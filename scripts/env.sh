# Source me: the environment every APO-ROS process wants when no full ROS 2 install is sourced.
_apo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="$_apo_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:-$VIRTUAL_ENV}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-${HOME:-/tmp}/.ros/log}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export MUJOCO_GL="${MUJOCO_GL:-osmesa}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-$MUJOCO_GL}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$ROS_LOG_DIR"
unset _apo_root
