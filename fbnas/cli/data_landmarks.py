"""``fbnas data make-landmarks`` and ``fbnas data check-landmarks``: landmark data sets."""

from __future__ import annotations

import time
from pathlib import Path

import click

from fbnas.cli.format import progress_bar, table
from fbnas.tasks.landmarks.data import (
    DEFAULT_TOLERANCE,
    check_landmark_set,
    landmark_set_folders,
)
from fbnas.tasks.landmarks.synthetic import make_landmark_set


@click.group()
def data() -> None:
    """Data sets: make a synthetic one, check one before training."""


@data.command("make-landmarks")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write train_data/ and test_data/ into (must not hold a set).")
@click.option("-n", "n", required=True, type=click.IntRange(min=2), help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resolution", default=112, show_default=True, type=click.IntRange(min=16),
              help="Image side in pixels.")
@click.option("--test-share", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of the images that go to test_data/.")
def make_landmarks(out_dir: str, n: int, seed: int, resolution: int, test_share: float
                   ) -> None:
    """Renders a synthetic 106-point landmark set (face-like drawings with exact points and
    true yaw/pitch/roll) in the list.txt layout."""
    bar, update = progress_bar("rendering", leave=False)
    start = time.perf_counter()
    try:
        out = make_landmark_set(out_dir, n, seed=seed, resolution=resolution,
                                test_share=test_share, progress=update)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    click.echo(f"wrote {n} images ({n / seconds:.0f} images/s) to {out}/train_data and "
               f"{out}/test_data")


@data.command("check-landmarks")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--num-points", default=106, show_default=True, type=click.IntRange(min=2))
@click.option("--skip-bad-lines", is_flag=True,
              help="Leave malformed lines out and count them instead of stopping.")
@click.option("--tolerance", default=DEFAULT_TOLERANCE, show_default=True,
              type=click.FloatRange(min=0),
              help="How far (a fraction of the crop) points may lie outside it.")
def check_landmarks(root: str, num_points: int, skip_bad_lines: bool, tolerance: float
                    ) -> None:
    """Checks a landmark set as training reads it: counts, skipped lines, ranges."""
    rows = []
    for folder in landmark_set_folders(Path(root)):
        r = check_landmark_set(folder, num_points, skip_bad_lines, tolerance)
        rows.append([folder.name, r.records, r.skipped, r.with_attributes,
                     f"{r.point_min[0]:.3f}..{r.point_max[0]:.3f}",
                     f"{r.point_min[1]:.3f}..{r.point_max[1]:.3f}",
                     f"{100 * r.outside_share:.2f}%",
                     " ".join(f"{lo:.0f}..{hi:.0f}" for lo, hi in zip(r.angle_min, r.angle_max,
                                                                       strict=True))])
    click.echo(table(["set", "images", "skipped", "attributes", "x range", "y range",
                      "outside crop", "yaw / pitch / roll"], rows))
