"""A tiny slimmable network and recipe shared by the sandwich-training and width-search tests."""

from __future__ import annotations

import torch

from fbnas.train import TrainConfig

TINY_SLIM_ARCH = {
    "input_size": 16,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [("conv_k3", 16, 2, 1)],
        [("ir_k3", 16, 1, 1, {"expansion": 1})],
        [("ir_k3", 24, 2, 2, {"expansion": 4})],
        [("ir_k3", 32, 2, 2, {"expansion": 4})],
        [("conv_k1", 64, 1, 1)],
    ],
}
"""Stem, a depthwise-separable block, two stages of inverted residuals, a 1x1 conv:
8 search dimensions."""

TINY_SLIM_ARCH_NO_BN = {**TINY_SLIM_ARCH, "basic_args": {"width_divisor": 8, "bn_args": None}}


def tiny_recipe(**changes: object) -> TrainConfig:
    """Short AdamW training on 16x16 digits (no workers: fewer processes on a slow machine)."""
    base = dict(epochs=2, batch_size=64, optimizer="adamw", lr=0.01, weight_decay=0.01,
                warmup_epochs=0, label_smoothing=0.0, random_crop=False, resolution=16,
                workers=0, seed=0)
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def synthetic_latency_table(model, resolution: int, levels, path, scale: float = 1.2,
                            offset_ms: float = 0.5):
    """Writes a latency table holding every grid entry of ``model`` without timing anything.

    An entry's "latency" is ``1e-6 * MACs + 0.01`` ms, and each calibration network's
    ``scale * sum + offset_ms``: figures the interpolation must reproduce exactly (the MACs
    of a block are multilinear in its widths).
    """
    from fbnas.cost import count_macs
    from fbnas.cost.latency import DeviceInfo
    from fbnas.cost.lut import LatencyEntry, LatencyTable, arch_items, network_key
    from fbnas.slim import extract_arch_spec
    from fbnas.slim.latency import calibration_wms, grid_items

    cache: dict[str, float] = {}

    def fake_ms(item) -> float:
        if item.key not in cache:  # shapes only: built and counted on the meta device
            with torch.device("meta"):
                module = item.build().eval()
            cache[item.key] = 1e-6 * count_macs(module, item.input_shape) + 0.01
        return cache[item.key]

    table = LatencyTable(DeviceInfo.current("torch", 1), rounds=1)
    _, items = grid_items(model, resolution, levels)
    for item in items.values():
        table.entries[item.key] = LatencyEntry([fake_ms(item)], runs=1)
    for name, wm in calibration_wms(model, levels):
        real_ch = model.decode_ch(model.decode_wm(wm))
        network = arch_items(extract_arch_spec(model, real_ch), resolution, model.num_classes,
                             name=f"{model.name}@{name}")
        for item in network.items:  # a random calibration network's own blocks
            table.entries.setdefault(item.key, LatencyEntry([fake_ms(item)], runs=1))
        total = sum(fake_ms(item) for item in network.items)
        table.networks[network_key(network)] = LatencyEntry([scale * total + offset_ms],
                                                            runs=1)
    table.save(path)
    return fake_ms
