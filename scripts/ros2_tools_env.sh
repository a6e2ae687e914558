# Source me (after scripts/env.sh): the environment of the ROS 2 tools that scripts/install_ros2_tools.sh
# put in .ros2-tools/ (ros2, colcon, launch, launch_pytest's pytest). With a ROS 2 install sourced
# (ROS_DISTRO set, `ros2` on PATH) only APO_PYTEST7_PATH is set: the system's tools are used as they are.
_apo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_apo_overlay="$_apo_root/.ros2-tools"
# pytest 7.4.4 for launch_pytest runs: put first on PYTHONPATH of `python -m pytest` (ros2/launch#947)
export APO_PYTEST7_PATH="$_apo_overlay/pytest7"
if [[ -z "${ROS_DISTRO:-}" ]] || ! command -v ros2 >/dev/null 2>&1; then
  _apo_prefix="$_apo_overlay/prefix"
  _apo_site="$(echo "$_apo_prefix"/lib/python3*/site-packages)"
  export PATH="$_apo_overlay/bin:$_apo_prefix/bin${PATH:+:$PATH}"
  export PYTHONPATH="$_apo_site${PYTHONPATH:+:$PYTHONPATH}"
  export LD_LIBRARY_PATH="$_apo_prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export AMENT_PREFIX_PATH="$_apo_prefix:${AMENT_PREFIX_PATH:-${VIRTUAL_ENV:-$_apo_root/.venv}}"
  # colcon's cmake packages (apo_interfaces) find ament_cmake and rosidl in the venv
  export CMAKE_PREFIX_PATH="${CMAKE_PREFIX_PATH:-${VIRTUAL_ENV:-$_apo_root/.venv}}"
  unset _apo_prefix _apo_site
fi
unset _apo_root _apo_overlay
