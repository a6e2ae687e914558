"""Export an APO dataset (HDF5, apo_core.dataset schema) as a LeRobotDataset that LeRobot and openpi load.

Usage::

    apo-export-lerobot DATASET.h5 OUT [--format v3.0|v2.1] [--fps 10] [--k K] [--camera agentview]

- ``--format v3.0`` (default) is what lerobot >= 0.4 reads; ``--format v2.1`` is for lerobot 0.3.x
  and tools pinned to it (openpi's LeRobot loader). Layouts: apo_trainer.lerobot.writers.
- Running it again on the same OUT appends only the episodes whose episode id OUT does not hold
  yet (totals, tasks, statistics and episode metadata updated). OUT holding the other format, a
  dataset not written by this tool, or different features (camera, image size, state or action
  width) is refused with a message.
- Images are stored as image features (PNG bytes in the Hugging Face ``Image`` struct, dtype
  ``image`` in info.json), not video: lossless, no video encoder or decoder needed, and LeRobot
  loads image features as (3, H, W) float tensors like decoded video frames.

Frame columns: ``observation.images.<camera>``, ``observation.state`` (when the robot has one),
``action``, ``timestamp`` (frame_index / fps), ``frame_index``, ``episode_index``, ``index``,
``task_index`` (the episode's language instruction is its task), ``next.done``, and:

- ``apo.label`` int64: desirability with the K-window (0 undesirable, 1 autonomous, 2 human); the
  labels the converter stored, or re-derived with ``--k``;
- ``apo.live_label`` int64 (1 / 2 as the arbiter set them) and ``apo.mode`` int64 (InterventionMode);
- ``complementary_info.is_intervention`` bool: a human (or, in a demonstration, the expert)
  drove the step; the name LeRobot's HIL-SERL recording uses;
- ``apo.policy_action`` float32 and ``apo.has_policy_action`` bool: the policy's proposal. No column
  holds NaN or null: a step without a proposal (expert demonstrations, a takeover the policy did not
  answer) has ``apo.has_policy_action`` False and zeros in ``apo.policy_action``.
"""

from __future__ import annotations

import argparse
import sys

from apo_trainer.lerobot import FORMATS, export_lerobot

__all__ = ["export_lerobot", "main"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="apo-export-lerobot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="APO HDF5 dataset")
    ap.add_argument("out", help="output directory: new, empty, or a dataset this command wrote before")
    ap.add_argument("--format", choices=FORMATS, default="v3.0", help="LeRobotDataset codebase version")
    ap.add_argument("--fps", type=int, default=10, help="control rate the episodes were recorded at")
    ap.add_argument("--k", type=int, default=None,
                    help="re-derive apo.label with this K-window (default: the labels stored in the dataset)")
    ap.add_argument("--camera", default="agentview", help="camera name in the image feature key")
    ap.add_argument("--robot-type", default="panda", help="info.json robot_type of a new dataset")
    args = ap.parse_args(argv)
    try:
        result = export_lerobot(args.dataset, args.out, args.format, args.fps, args.k, args.camera,
                                args.robot_type)
    except (ValueError, OSError) as exc:
        print(f"apo-export-lerobot: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {result.new_episodes} new episodes to {result.out} (LeRobot {result.format}): "
          f"{result.total_episodes} episodes, {result.total_frames} frames in total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
