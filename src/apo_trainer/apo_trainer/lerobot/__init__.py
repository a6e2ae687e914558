"""LeRobotDataset export of APO HDF5 datasets (v3.0 and v2.1 layouts); see apo_trainer.lerobot_export."""

from apo_trainer.lerobot.export import FORMATS, ExportResult, LeRobotExportError, export_lerobot

__all__ = ["FORMATS", "ExportResult", "LeRobotExportError", "export_lerobot"]
