"""A synthetic landmark set: rendered face-like images with exact landmarks and true angles.

Tests and the demo need a landmark set that ships with nothing and trains in minutes. Each
image is drawn, not photographed: a 3-D template of the 106-point layout (contour, brows,
eyes, nose, mouth; ``layouts/106.json``), varied per face (shape, expression, gaze), turned
by a random yaw, pitch and roll, projected, scaled and shifted into the crop, then drawn with
PIL over a cluttered background under a random light. The landmarks written are the projected
template points themselves, so they are exact, and the angles are the ones used.

Pose convention (what the written angles mean; degrees, applied yaw, then pitch, then roll):
yaw > 0 turns the face towards the image's right (the nose moves right), pitch > 0 turns it
up (the nose moves up), roll > 0 tilts it clockwise on screen. Points are fractions of the
crop with 0 at the left/top edge and 1 at the right/bottom edge (``data.py``).

The output is the ``list.txt`` layout the loaders read (``train_data/{imgs,list.txt}`` and
``test_data/{imgs,list.txt}``); the loaders know nothing of where a set came from.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fbnas.tasks.landmarks.layout import LandmarkDataError

logger = logging.getLogger(__name__)

SUPERSAMPLE = 2
"""Faces are drawn at this multiple of the resolution and box-filtered down (antialiasing)."""


@dataclass(frozen=True)
class FaceShape:
    """Per-face variation of the template (all relative to a face half-width of 1)."""

    width: float = 1.0
    height: float = 1.0
    eye_width: float = 0.17
    eye_open: float = 0.07
    brow_lift: float = 0.0
    mouth_width: float = 0.30
    mouth_open: float = 0.02
    smile: float = 0.0
    gaze: tuple[float, float] = (0.0, 0.0)


def _arc(x0: float, x1: float, y: float, bulge: float, n: int) -> np.ndarray:
    """``n`` points from ``x0`` to ``x1`` along a sine arc lifted by ``bulge`` (y down)."""
    s = np.linspace(0.0, 1.0, n)
    return np.stack([x0 + (x1 - x0) * s, y - bulge * np.sin(math.pi * s)], axis=1)


def _eye(cx: float, cy: float, shape: FaceShape, side: float) -> dict[str, np.ndarray]:
    """The points of one eye; ``side`` -1 for the image-left eye, +1 for the right one."""
    w, h = shape.eye_width, shape.eye_open
    outer, inner = cx + side * w, cx - side * w
    upper = _arc(outer, inner, cy, h, 4)  # outer corner, 2 lid points, inner corner
    lower = _arc(inner, outer, cy, -0.75 * h, 4)
    gx, gy = shape.gaze
    return {"outer": upper[0], "inner": upper[3], "upper": upper[1:3], "lower": lower[1:3],
            "upper_mid": np.array([cx, cy - h]), "lower_mid": np.array([cx, cy + 0.75 * h]),
            "centre": np.array([cx, cy]),
            "pupil": np.array([cx + gx * w * 0.5, cy + gy * h * 0.4])}


def template_106(shape: FaceShape) -> np.ndarray:
    """The 106 template points ``(106, 3)``: x right, y down, z towards the camera, in the
    order of ``layouts/106.json`` (the groups named there)."""
    pts = np.zeros((106, 3))
    w, h = shape.width, shape.height
    # Contour 0..32: ear (eye level) over the chin to the other ear.
    phi = np.linspace(0.0, math.pi, 33)
    pts[0:33, 0] = -0.92 * w * np.cos(phi) * (1.0 - 0.12 * np.sin(phi) ** 2)
    pts[0:33, 1] = -0.18 * h + 1.18 * h * np.sin(phi) ** 1.15
    pts[0:33, 2] = -0.55 + 0.85 * np.sin(phi)
    brow_y = -0.48 * h - shape.brow_lift
    # Brows: upper edges 33-37 (left, outer to inner) and 38-42 (right, inner to outer);
    # lower edges 64-67 (left, outer to inner) and 68-71 (right, inner to outer).
    left_up = _arc(-0.78 * w, -0.16 * w, brow_y, 0.10, 5)
    right_up = _arc(0.16 * w, 0.78 * w, brow_y, 0.10, 5)
    pts[33:38, :2] = left_up
    pts[38:43, :2] = right_up
    pts[64:68, :2] = _arc(-0.72 * w, -0.18 * w, brow_y + 0.075, 0.07, 4)
    pts[68:72, :2] = _arc(0.18 * w, 0.72 * w, brow_y + 0.075, 0.07, 4)
    pts[np.r_[33:43, 64:72], 2] = 0.12
    # Nose: bridge 43-46 (top to tip), bottom 47-51 (left to right), sides 78-83.
    pts[43:47, 1] = np.linspace(-0.24, 0.24, 4) * h
    pts[43:47, 2] = np.linspace(0.22, 0.50, 4)
    pts[47:52, 0] = np.linspace(-0.15, 0.15, 5) * w
    pts[47:52, 1] = (0.33 + np.array([0.0, 0.015, 0.03, 0.015, 0.0])) * h
    pts[47:52, 2] = np.array([0.25, 0.33, 0.38, 0.33, 0.25])
    for i, (x, y, z) in enumerate([(0.07, -0.10, 0.22), (0.12, 0.16, 0.30), (0.18, 0.28, 0.2)]):
        pts[78 + 2 * i] = (-x * w, y * h, z)
        pts[79 + 2 * i] = (x * w, y * h, z)
    # Eyes: 52-57 left (outer, upper x2, inner, lower x2), 58-63 right (inner, upper x2,
    # outer, lower x2); extras 72-77; pupils 104, 105.
    eye_y = -0.24 * h
    left, right = _eye(-0.42 * w, eye_y, shape, -1.0), _eye(0.42 * w, eye_y, shape, 1.0)
    pts[52, :2], pts[53:55, :2], pts[55, :2] = left["outer"], left["upper"], left["inner"]
    pts[56:58, :2] = left["lower"]
    pts[58, :2], pts[59:61, :2], pts[61, :2] = right["inner"], right["upper"][::-1], \
        right["outer"]
    pts[62:64, :2] = right["lower"][::-1]
    for base, eye in ((72, left), (75, right)):
        pts[base, :2], pts[base + 1, :2] = eye["upper_mid"], eye["lower_mid"]
        pts[base + 2, :2] = eye["centre"]
    pts[104, :2], pts[105, :2] = left["pupil"], right["pupil"]
    pts[np.r_[52:64, 72:78, 104, 105], 2] = 0.15
    # Mouth: outer 84-95 (left corner, upper 85-89, right corner, lower 91-95 right to
    # left), inner 96-103 (left corner, upper 97-99, right corner, lower 101-103).
    my, mw, mo, smile = 0.60 * h, shape.mouth_width * w, shape.mouth_open, shape.smile
    s = np.linspace(-1.0, 1.0, 7)
    corner_y = my - smile
    upper = my - 0.055 - mo / 2 - 0.03 * np.cos(s * math.pi / 2) ** 2
    upper = upper + (corner_y - my) * s**2 + 0.025 * np.exp(-(s / 0.18) ** 2)  # cupid's bow
    lower = my + 0.085 + mo / 2 - 0.06 * s**2 + (corner_y - my) * s**2
    pts[84:91, 0], pts[84:91, 1] = mw * s, upper
    pts[84, 1] = pts[90, 1] = corner_y
    pts[91:96, 0], pts[91:96, 1] = (mw * s[1:6])[::-1], lower[1:6][::-1]
    si = np.linspace(-1.0, 1.0, 5)
    iw = 0.72 * mw
    pts[96:101, 0] = iw * si
    pts[96:101, 1] = my - mo / 2 + (corner_y - my) * si**2 * 0.8
    pts[101:104, 0] = (iw * si[1:4])[::-1]
    pts[101:104, 1] = (my + mo / 2 + (corner_y - my) * si[1:4] ** 2 * 0.8)[::-1]
    pts[84:104, 2] = 0.28
    return pts


def forehead(shape: FaceShape) -> np.ndarray:
    """Points closing the face above the brows (drawn, not landmarks) ``(M, 3)``."""
    phi = np.linspace(math.pi, 2 * math.pi, 15)[1:-1]
    x = -0.92 * shape.width * np.cos(phi) * 0.98
    y = -0.18 * shape.height + 0.82 * shape.height * np.sin(phi)
    return np.stack([x, y, -0.55 - 0.75 * np.sin(phi)], axis=1)


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """The ``(3, 3)`` rotation of the pose convention of the module docstring (x right,
    y down, z towards the camera): yaw about y, then pitch about x, then roll about z."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    ryaw = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rpitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)],
                       [0, math.sin(p), math.cos(p)]])
    rroll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0],
                      [0, 0, 1]])
    return rroll @ rpitch @ ryaw


@dataclass(frozen=True)
class RenderSettings:
    """The ranges the renderer draws from (angles in degrees, sizes fractions of the crop)."""

    max_yaw: float = 30.0
    max_pitch: float = 20.0
    max_roll: float = 25.0
    scale_min: float = 0.34
    scale_max: float = 0.44
    max_shift: float = 0.06
    clutter: int = 8


def random_shape(rng: np.random.Generator) -> FaceShape:
    """A random face: proportions, expression and gaze within plausible ranges."""
    return FaceShape(width=rng.uniform(0.88, 1.08), height=rng.uniform(0.92, 1.1),
                     eye_width=rng.uniform(0.14, 0.19), eye_open=rng.uniform(0.035, 0.085),
                     brow_lift=rng.uniform(-0.04, 0.08), mouth_width=rng.uniform(0.24, 0.36),
                     mouth_open=rng.choice([0.0, rng.uniform(0.0, 0.16)]),
                     smile=rng.uniform(-0.03, 0.07),
                     gaze=(rng.uniform(-1, 1), rng.uniform(-1, 1)))


def _colour(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def render_face(rng: np.random.Generator, resolution: int = 112,
                settings: RenderSettings = RenderSettings()
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic sample: the image ``(R, R, 3)`` uint8, the 106 points ``(106, 2)`` as
    fractions of the crop and the angles ``(3,)`` (yaw, pitch, roll, degrees)."""
    from PIL import Image, ImageDraw

    shape = random_shape(rng)
    angles = np.array([rng.uniform(-settings.max_yaw, settings.max_yaw),
                       rng.uniform(-settings.max_pitch, settings.max_pitch),
                       rng.uniform(-settings.max_roll, settings.max_roll)])
    rot = rotation(*angles)
    scale = rng.uniform(settings.scale_min, settings.scale_max)
    centre = 0.5 + rng.uniform(-settings.max_shift, settings.max_shift, size=2)
    centre[1] -= 0.06  # centres the landmarks (brows to chin) rather than the whole head

    def project(p3: np.ndarray) -> np.ndarray:
        return (p3 @ rot.T)[:, :2] * scale + centre

    landmarks = template_106(shape)
    points = project(landmarks)
    size = resolution * SUPERSAMPLE
    image = Image.new("RGB", (size, size), _colour(rng, 30, 220))
    draw = ImageDraw.Draw(image)
    _draw_clutter(draw, rng, size, settings.clutter)

    def xy(p2: np.ndarray) -> list[tuple[float, float]]:
        # Continuous crop coordinates to PIL's (pixel centres on integers).
        return [(float(x) * size - 0.5, float(y) * size - 0.5) for x, y in p2]

    skin = _skin(rng)
    # The head is the convex hull of contour, forehead and brows: under yaw the far brow
    # would otherwise stick out of a face drawn from the contour alone.
    head = project(np.concatenate([landmarks[0:43], landmarks[64:72], forehead(shape)]))
    draw.polygon(xy(convex_hull(head)), fill=tuple(int(v) for v in skin))
    dark = tuple(int(v) for v in skin * rng.uniform(0.2, 0.45))
    P = points
    draw.polygon(xy(np.concatenate([P[33:38], P[64:68][::-1]])), fill=dark)
    draw.polygon(xy(np.concatenate([P[38:43], P[68:72][::-1]])), fill=dark)
    iris = tuple(int(v) for v in skin * rng.uniform(0.15, 0.5) * rng.uniform(0.8, 1.2, 3))
    for eye, pupil in ((np.r_[52, 53, 54, 55, 56, 57], 104), (np.r_[58, 59, 60, 61, 62, 63],
                                                              105)):
        ring = xy(P[eye])
        draw.polygon(ring, fill=(245, 245, 240), outline=dark)
        r = 0.45 * shape.eye_open * scale * size * 1.4
        cx, cy = xy(P[pupil : pupil + 1])[0]
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=iris)
        draw.ellipse([cx - r / 2.5, cy - r / 2.5, cx + r / 2.5, cy + r / 2.5], fill=(10, 10, 10))
    shade = tuple(int(v) for v in skin * 0.7)
    line_w = max(1, size // 90)
    draw.line(xy(P[[78, 80, 82]]), fill=shade, width=line_w)
    draw.line(xy(P[[79, 81, 83]]), fill=shade, width=line_w)
    draw.line(xy(P[43:47]), fill=shade, width=line_w)
    draw.line(xy(P[[82, 47, 48, 49, 50, 51, 83]]), fill=tuple(int(v) for v in skin * 0.5),
              width=line_w + 1)
    lips = tuple(int(v) for v in np.array([rng.uniform(150, 210), rng.uniform(50, 90),
                                           rng.uniform(60, 100)]))
    draw.polygon(xy(P[84:96]), fill=lips)
    draw.polygon(xy(P[96:104]), fill=(60, 20, 25))
    array = np.asarray(image.resize((resolution, resolution), Image.Resampling.BOX),
                       dtype=np.float32)
    array = _light(array, rng)
    return array, points.astype(np.float32), angles.astype(np.float32)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """The convex hull ``(K, 2)`` of ``points`` ``(N, 2)`` in order around it (monotone
    chain)."""
    pts = sorted(map(tuple, points.tolist()))

    def half(sequence: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for p in sequence:
            while len(chain) >= 2 and ((chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1])
                                       - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])
                                       ) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


SKIN_LIGHT = np.array([250.0, 222.0, 196.0])
SKIN_DARK = np.array([96.0, 62.0, 44.0])


def _skin(rng: np.random.Generator) -> np.ndarray:
    """A skin tone between light and dark, slightly tinted (RGB floats)."""
    tone = SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * rng.uniform(0.0, 1.0)
    return np.clip(tone * rng.uniform(0.92, 1.08, size=3), 0, 255)


def _draw_clutter(draw, rng: np.random.Generator, size: int, count: int) -> None:
    """Random shapes behind the face, so that a model cannot find it by colour alone."""
    for _ in range(int(rng.integers(0, count + 1))):
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, h = rng.uniform(0.05, 0.5, size=2) * size
        kind = rng.integers(0, 3)
        fill = _colour(rng, 0, 256)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=fill, width=int(rng.integers(1, 6)))


def _light(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random directional light (a linear gain ramp), overall gain and sensor noise."""
    r = array.shape[0]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, r)
    grad = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    gain = rng.uniform(0.6, 1.2) * (1.0 + rng.uniform(0.0, 0.6) * grad)
    noise = rng.standard_normal(array.shape, dtype=np.float32) * np.float32(rng.uniform(0, 6))
    noisy = array * gain[:, :, None].astype(np.float32) + noise
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_landmark_set(out_dir: str | os.PathLike, n: int, seed: int = 0,
                      resolution: int = 112, test_share: float = 0.2,
                      num_points: int = 106,
                      progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Renders ``n`` faces into ``out_dir/train_data`` and ``out_dir/test_data`` (the first
    ``round(n * test_share)`` go to the test set) and returns ``out_dir``. ``progress``
    is called as ``(done, n, part)`` after each image (the CLI's progress bar).

    Images are PNG files ``imgs/000000.png`` ...; ``list.txt`` is written last, atomically,
    so an interrupted run never leaves a list naming images that are not there. The same
    seed gives the same set.

    Raises:
        LandmarkDataError: ``num_points`` is not 106 (the template draws that layout), a bad
            ``n``/``test_share``/``resolution``, or ``out_dir`` already holds a set.
    """
    from fbnas.io import atomic_write_text

    if num_points != 106:
        raise LandmarkDataError(f"the synthetic renderer draws the 106-point layout only, "
                                f"got num_points={num_points}")
    if not isinstance(n, int) or n < 2:
        raise LandmarkDataError(f"n must be an integer >= 2 (a training and a test image), "
                                f"got {n!r}")
    if not 0.0 < test_share < 1.0:
        raise LandmarkDataError(f"test_share must be in (0, 1), got {test_share}")
    if not isinstance(resolution, int) or resolution < 16:
        raise LandmarkDataError(f"resolution must be an integer >= 16, got {resolution!r}")
    out = Path(out_dir)
    for part in ("train_data", "test_data"):
        if (out / part / "list.txt").exists():
            raise LandmarkDataError(f"{str(out / part)!r} already holds a landmark set; "
                                    f"choose an empty folder (nothing was overwritten)")
    n_test = min(n - 1, max(1, round(n * test_share)))
    rng = np.random.default_rng(seed)
    parts = {"test_data": n_test, "train_data": n - n_test}
    from PIL import Image

    done = 0
    for part, count in parts.items():
        folder = out / part
        (folder / "imgs").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            image, points, angles = render_face(rng, resolution)
            name = f"imgs/{i:06d}.png"
            Image.fromarray(image).save(folder / name, compress_level=1)
            numbers = " ".join(f"{v:.6f}" for v in points.reshape(-1))
            lines.append(f"{name} {numbers} {' '.join(f'{a:.4f}' for a in angles)}")
            done += 1
            if progress is not None:
                progress(done, n, part)
        atomic_write_text(folder / "list.txt", "\n".join(lines) + "\n")
        logger.info("wrote %d images to %s", count, folder)
    return out
