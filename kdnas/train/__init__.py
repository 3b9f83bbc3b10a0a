"""The training engine: ``fit`` (one recipe for teachers, assistants, students; checkpoint and resume),
evaluation (``accuracy``, ``predict``), partial checkpoints with progress lines for long runs
(``Resumable``), and the early-stopping rule a search applies after each epoch.
"""

from kdnas.train._early_stop import EarlyStopping, checkpoint_hook
from kdnas.train._fit import (Batch, LossFn, TrainRecipe, accuracy, fast_memory_format, fit, inference_batch_size,
                              predict)
from kdnas.train._precision import PRECISIONS, Mixed, resolve_precision
from kdnas.train._resumable import Resumable

__all__ = [
    "accuracy", "Batch", "checkpoint_hook", "EarlyStopping", "fast_memory_format", "fit", "inference_batch_size",
    "LossFn", "Mixed", "PRECISIONS", "predict", "resolve_precision", "Resumable", "TrainRecipe",
]
