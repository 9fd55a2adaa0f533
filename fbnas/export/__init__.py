"""Export to ONNX, verified by ONNX Runtime; models rebuilt from training checkpoints."""

from fbnas.export.checkpoint import (
    checkpoint_head,
    is_checkpoint_path,
    load_model_from_checkpoint,
)
from fbnas.export.onnx import (
    ExportError,
    ExportReport,
    calibrate_batchnorm,
    fold_batchnorm,
    to_onnx,
)

__all__ = [
    "ExportError",
    "ExportReport",
    "calibrate_batchnorm",
    "checkpoint_head",
    "fold_batchnorm",
    "is_checkpoint_path",
    "load_model_from_checkpoint",
    "to_onnx",
]
