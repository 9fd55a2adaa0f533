"""Speed of the synthetic landmark set: images per second, rendering alone and written.

``fbnas data make-landmarks`` should make ~200 images/s at 112 x 112 so that tests and the
demo render their sets in seconds. This prints, over interleaved rounds, the rate of
rendering alone (``render_face``), of PNG encoding plus the file write, and of the whole
``make_landmark_set``; the min-max over rounds is the spread (the machine is shared).

    python benchmarks/landmark_synthetic.py [--n 200] [--rounds 3] [--resolution 112]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fbnas.tasks.landmarks.synthetic import make_landmark_set, render_face


def rate(n: int, seconds: float) -> float:
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=112)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"render": [], "png encode": [], "png write": [],
                                     "make_landmark_set": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            rng = np.random.default_rng(k)
            start = time.perf_counter()
            images = [render_face(rng, args.resolution)[0] for _ in range(args.n)]
            rates["render"].append(rate(args.n, time.perf_counter() - start))
            start = time.perf_counter()
            encoded = []
            for image in images:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, "PNG", compress_level=1)
                encoded.append(buffer.getvalue())
            rates["png encode"].append(rate(args.n, time.perf_counter() - start))
            folder = Path(tmp) / f"raw{k}"
            folder.mkdir()
            start = time.perf_counter()
            for i, data in enumerate(encoded):
                (folder / f"{i:06d}.png").write_bytes(data)
            rates["png write"].append(rate(args.n, time.perf_counter() - start))
            start = time.perf_counter()
            make_landmark_set(Path(tmp) / f"set{k}", args.n, seed=k,
                              resolution=args.resolution)
            rates["make_landmark_set"].append(rate(args.n, time.perf_counter() - start))
    print(f"{args.n} images at {args.resolution} x {args.resolution}, {args.rounds} rounds "
          f"(images/s, median and min-max):")
    for name, values in rates.items():
        print(f"  {name:18s} {np.median(values):7.0f}  ({min(values):.0f}-{max(values):.0f})")


if __name__ == "__main__":
    main()
