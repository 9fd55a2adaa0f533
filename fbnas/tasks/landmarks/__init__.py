"""Facial landmarks (PFLD, 106 points): layout, data, augmentation, synthetic set, metrics.

Data and metrics live here (``layout``, ``data``, ``augment``, ``synthetic``, ``metrics``,
``plots``); the models, losses and the task are their own modules. Submodules are imported
by name, so that importing the data side never builds a model.
"""

from fbnas.tasks.landmarks.data import (
    LandmarkDataset,
    LandmarkRecord,
    open_landmark_datasets,
    read_landmark_list,
)
from fbnas.tasks.landmarks.layout import LandmarkDataError, LandmarkLayout, load_layout

__all__ = [
    "LandmarkDataError",
    "LandmarkDataset",
    "LandmarkLayout",
    "LandmarkRecord",
    "load_layout",
    "open_landmark_datasets",
    "read_landmark_list",
]
