"""Access to the reference data (a copy of ``../shared/reference`` in ``tests/data``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from torch import nn

# A copy of ../shared/reference (the reference builds, as data), so the suite runs anywhere.
REFERENCE_DIR = Path(__file__).resolve().parent / "data"


@cache
def load(name: str) -> dict:
    return json.loads((REFERENCE_DIR / name).read_text())


def zoo_reference() -> dict:
    return load("zoo_arch_defs.json")


def block_examples() -> dict:
    return load("block_structure_examples.json")["archs"]


def _tuple(v) -> list:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def describe_block(block: nn.Module) -> dict:
    """The per-block structure in the reference file's vocabulary (convs, norms, acts...)."""
    convs, norms, acts, others = [], [], [], []
    act_types = {"ReLU", "ReLU6", "Sigmoid", "HSwish", "Swish", "HSigmoid", "GELU",
                 "LeakyReLU", "PReLU"}
    for name, m in block.named_modules():
        kind = type(m).__name__
        if isinstance(m, nn.Conv2d):
            convs.append({"name": name, "in": m.in_channels, "out": m.out_channels,
                          "k": _tuple(m.kernel_size), "s": _tuple(m.stride),
                          "p": _tuple(m.padding), "d": _tuple(m.dilation), "g": m.groups,
                          "bias": m.bias is not None})
        elif isinstance(m, nn.BatchNorm2d):
            norms.append({"name": name, "C": m.num_features,
                          "weight_zero": bool(torch.all(m.weight == 0))})
        elif kind in act_types:
            acts.append({"name": name, "type": kind})
        elif kind in ("SEModule", "AdaptiveAvgPool2d", "MaxPool2d", "AvgPool2d", "TorchAdd",
                      "ChannelShuffle"):
            others.append({"name": name, "type": kind})
    key = lambda d: d["name"]  # noqa: E731
    return {"convs": sorted(convs, key=key), "norms": sorted(norms, key=key),
            "acts": sorted(acts, key=key), "others": sorted(others, key=key)}


def reference_block(ref: dict) -> dict:
    key = lambda d: d["name"]  # noqa: E731
    return {
        "convs": sorted(({k: c[k] for k in ("name", "in", "out", "k", "s", "p", "d", "g",
                                             "bias")} for c in ref["convs"]), key=key),
        "norms": sorted(({k: n[k] for k in ("name", "C", "weight_zero")} for n in ref["norms"]),
                        key=key),
        "acts": sorted(({k: a[k] for k in ("name", "type")} for a in ref["acts"]), key=key),
        "others": sorted(({k: o[k] for k in ("name", "type")} for o in ref["others"]), key=key),
    }
