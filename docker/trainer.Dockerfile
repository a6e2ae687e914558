# Trainer side of APO-ROS for the GPU node: CUDA PyTorch, apo_core + apo_trainer, no ROS.
#   docker build -f docker/trainer.Dockerfile -t apo-ros/trainer .
#   docker run --rm --gpus all --ipc=host -v /shared/apo:/shared/apo apo-ros/trainer \
#     torchrun --standalone --nproc_per_node 4 -m apo_trainer.train --config /shared/apo/job/train_config.yaml
# The retrain service on the robot side reaches this image through its `command` backend
# (config/retrain.yaml), over storage both machines mount at the same path.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-dev libgl1 \
        libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/apo
COPY requirements/trainer.txt requirements/trainer.txt
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
    && pip install --no-cache-dir -r requirements/trainer.txt "torch==${TORCH_VERSION}"

COPY src/apo_core/ src/apo_core/
COPY src/apo_trainer/ src/apo_trainer/
RUN pip install --no-cache-dir --no-deps -e src/apo_core -e src/apo_trainer \
    && python3 -c "import apo_trainer.train, apo_trainer.convert"

CMD ["apo-train", "--help"]
