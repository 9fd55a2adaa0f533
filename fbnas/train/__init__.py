"""Training: recipes, the ``Trainer`` loop, checkpoints, data-parallel processes."""

from fbnas.train.checkpoint import (
    atomic_save,
    find_resumable,
    read_checkpoint,
    read_training_checkpoint,
)
from fbnas.train.config import RecipeError, TrainConfig, builtin_recipes, load_recipe
from fbnas.train.distributed import (
    DistContext,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from fbnas.train.regularize import load_init_weights, set_drop_path, set_head_dropout
from fbnas.train.trainer import (
    EvalResult,
    GlobalBatchSampler,
    StepInfo,
    Trainer,
    TrainListener,
    evaluate,
)

__all__ = [
    "DistContext",
    "EvalResult",
    "GlobalBatchSampler",
    "RecipeError",
    "StepInfo",
    "TrainConfig",
    "TrainListener",
    "Trainer",
    "atomic_save",
    "builtin_recipes",
    "evaluate",
    "find_resumable",
    "init_distributed",
    "load_init_weights",
    "load_recipe",
    "read_checkpoint",
    "read_training_checkpoint",
    "resolve_device",
    "set_drop_path",
    "set_head_dropout",
    "shutdown_distributed",
]
