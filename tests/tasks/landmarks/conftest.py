"""A small synthetic landmark set, rendered once per test session (read-only: copy it to
change it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fbnas.tasks.landmarks.synthetic import make_landmark_set


@pytest.fixture(scope="session")
def landmark_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train_data`` (8 images) and ``test_data`` (2 images) at 112 x 112."""
    return make_landmark_set(tmp_path_factory.mktemp("landmarks"), 10, seed=3)


@pytest.fixture
def landmark_copy(landmark_set: Path, tmp_path: Path) -> Path:
    """A copy of :func:`landmark_set` that a test may break."""
    return Path(shutil.copytree(landmark_set, tmp_path / "set"))
