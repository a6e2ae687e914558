#!/usr/bin/env bash
# Build the two venvs in which test_lerobot_export.py runs the real lerobot (test_real_lerobot_loads_the_export):
#   DIR/lerobot-0.4  lerobot 0.4.4 (reads LeRobotDataset v3.0) with datasets 4
#   DIR/lerobot-0.3  lerobot 0.3.3 (reads v2.1, what openpi's pinned lerobot reads) with datasets 3.6;
#                    it takes torch/torchvision from lerobot-0.4 through a .pth file (appended after its own
#                    site-packages, so its own lerobot and datasets win)
# lerobot cannot go into the project's .venv: 0.4.x pins torch < 2.11 and 0.3.x torch < 2.8, the project
# runs torch 2.13. Here lerobot is installed with --no-deps beside torch 2.14.1 + torchvision 0.29.1 (the
# torchvision that imports beside a torch this machine has on disk), i.e. past its torch pin; the test uses
# only lerobot's dataset code. Only what that code imports is installed (no training, robots or logging).
# Prints the APO_LEROBOT_PYTHONS value to export. Usage: bash lerobot_venvs.sh DIR   (about 6 GB, mostly torch)
set -euo pipefail
DIR="$(mkdir -p "${1:?usage: lerobot_venvs.sh DIR}" && cd "$1" && pwd)"
PY="${APO_PYTHON:-python3.11}"
NEW="$DIR/lerobot-0.4"
OLD="$DIR/lerobot-0.3"
PIP=(-m pip install --disable-pip-version-check -q)

works() { env -u PYTHONPATH "$1/bin/python" -c "import lerobot.datasets.lerobot_dataset" >/dev/null 2>&1; }

if ! works "$NEW"; then
  [[ -x "$NEW/bin/python" ]] || "$PY" -m venv "$NEW"
  "$NEW/bin/python" "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
  "$NEW/bin/python" "${PIP[@]}" datasets==4.8.5 huggingface-hub==0.35.3 av==15.1.0 draccus==0.10.0 \
    accelerate==1.16.0 jsonlines==4.0.0 einops==0.8.2 opencv-python-headless==4.12.0.88 termcolor==3.3.0 \
    deepdiff==8.6.2 imageio==2.38.2 imageio-ffmpeg==0.8.1 pandas
  "$NEW/bin/python" "${PIP[@]}" --no-deps lerobot==0.4.4
fi
if ! works "$OLD"; then
  [[ -x "$OLD/bin/python" ]] || "$PY" -m venv "$OLD"
  "$OLD/bin/python" "${PIP[@]}" datasets==3.6.0 huggingface-hub==0.35.3 av==15.1.0 draccus==0.10.0 \
    jsonlines==4.0.0 einops==0.8.2 opencv-python-headless==4.12.0.88 termcolor==3.3.0 deepdiff==8.6.2 \
    imageio==2.38.2 imageio-ffmpeg==0.8.1 pandas
  "$OLD/bin/python" "${PIP[@]}" --no-deps lerobot==0.3.3
  site="$("$OLD/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$NEW/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/zz_torch_from_lerobot_0_4.pth"
fi
works "$NEW" && works "$OLD"
echo "APO_LEROBOT_PYTHONS=$NEW/bin/python:$OLD/bin/python"
