# Robot side of APO-ROS: ROS 2 Jazzy + the colcon workspace (policy node, arbiter, teleop, recorder,
# retrain service client side, simulator for dry runs).
#   docker build -f docker/robot.Dockerfile -t apo-ros/robot .
#   docker run --rm -it --net=host --ipc=host -v /data/apo:/data/apo --device /dev/input/js0 apo-ros/robot \
#     ros2 launch apo_bringup deploy.launch.py robot:=real model_path:=/data/apo/models bags_dir:=/data/apo/bags
# Pins come from the same requirements/ files as scripts/setup.sh; torch is installed first so nothing
# pulls a second build of it.
FROM ros:jazzy-ros-base

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1 MUJOCO_GL=egl PYOPENGL_PLATFORM=egl \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-colcon-common-extensions python3-rosdep \
        ros-jazzy-joy ros-jazzy-diagnostic-msgs ros-jazzy-std-srvs ros-jazzy-rosbag2-storage-mcap \
        libegl1 libgl1 libosmesa6 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /ws
COPY requirements/ requirements/
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
    && pip install --no-cache-dir -r requirements/base.txt "torch==${TORCH_VERSION}"

COPY src/ src/
COPY launch/ launch/
COPY config/ config/
RUN . /opt/ros/jazzy/setup.sh && colcon build --merge-install --event-handlers console_direct- \
    && rm -rf build log

RUN printf '#!/bin/bash\nset -e\nsource /opt/ros/jazzy/setup.bash\nsource /ws/install/setup.bash\nexec "$@"\n' \
        > /entrypoint.sh && chmod +x /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["ros2", "launch", "apo_bringup", "deploy.launch.py", "robot:=real"]
