"""FBNet search on PFLD (seed 004; ALGORITHMS.md §5.2, §5.4): the supernet, its costs, the run.

:class:`PFLDSupernet` is a hand-written task model for the search engine: PFLD's fixed parts
(:class:`fbnas.tasks.landmarks.models.PFLDFrame`: the stem, the multi-scale fusion, the
tail and the auxiliary angle net) around five :class:`MixedOp` layers over the ``pfld``
space's candidates. It follows :class:`fbnas.search.engine.SearchableModel` with the θ,
sampling and cost methods of the FBNetV1 :class:`Supernet` (soft mixture or single path);
a choice is one candidate index per layer, frozen into ``{"family": "pfld", "layers":
[names]}``, which :func:`fbnas.tasks.landmarks.models.build_landmark_model` builds and which
inherits the supernet's weights by name (:func:`pfld_subnet_state_dict`).

Costs (:func:`pfld_layer_costs`): MACs or params analytically (the auxiliary net, which is
not deployed, is not part of any network's cost), or latency from a table of every candidate
and fixed part timed in place (:func:`build_pfld_table`, an :class:`fbnas.cost.lut.LatencyTable`
keyed by op, input shape, width, stride and options).

The cost loss is NNI's ``mul`` with α = 0.25, β = 0.6 (:data:`PFLD_SEARCH_DEFAULTS`), on
fbnas's normalised cost ``r = e · c / c_min``: ``L · α · (log r)^β``. NNI applies it to the
raw cost (MFLOPs or µs), ``L · α · (log c)^β``; since ``log r = 1 + log(c / c_min)``, the
two agree where the cheapest network costs ``e`` raw units, and otherwise fbnas's factor
is NNI's with ``log c`` shifted by ``1 − log c_min`` — the same preference for cheaper
networks, independent of the unit (NNI's factor changes when its table switches from
MFLOPs to µs). θ trains on a split held out from the training set (the engine's ``w_share``),
not on the validation set as NNI's example does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.blocks.layers import Cost
from fbnas.search.derive import ARGMAX, LayerCosts
from fbnas.search.dnas.search import DNASConfig, SearchResult
from fbnas.search.dnas.supernet import (
    MODES,
    MixedOp,
    Mode,
    PathSample,
    Supernet,
    WeightedIRFBlock,
    _folds_weight,
)
from fbnas.search.engine import Progress, SearchEngine
from fbnas.search.protocols import Frozen
from fbnas.tasks.landmarks.models import (
    PFLD_FAMILY,
    PFLD_FM_SIZES,
    PFLDFrame,
    PFLDLayer,
    candidate_plans,
    fixed_parts,
    pfld_fixed_cost,
    pfld_layers,
)
from fbnas.tasks.landmarks.task import LandmarkTask
from fbnas.train.distributed import DistContext

logger = logging.getLogger(__name__)

PFLD_CONFIG = "pfld"
"""The built-in search config of NNI's PFLD settings (``configs/pfld.yaml``): ``mul`` with
α = 0.25, β = 0.6, θ's lr 0.01 and weight decay 5e-4, τ₀ = 5 decaying by exp(−0.045) per
epoch; the weights train with the engine's SGD (NNI: RMSprop lr 1e-4 over 300 epochs)."""


_IN_HW = ((14, 14), (14, 14), (14, 14), (7, 7), (7, 7))
"""The input size of each searched layer (the first stage_1 layer halves 14 to 7)."""


def pfld_search_config(**changes: Any) -> DNASConfig:
    """The ``pfld`` search config (:data:`PFLD_CONFIG`), then ``changes``."""
    from fbnas.search.dnas.search import load_search_config

    config = load_search_config(PFLD_CONFIG)
    return config.replace(**changes) if changes else config


# --------------------------------------------------------------------------- costs


def _key(op: str, kwargs: Any, cin: int, hw: tuple[int, int], cout: int, stride: int) -> str:
    options = json.dumps(dict(kwargs), sort_keys=True, separators=(",", ":"),
                         default=lambda v: dict(v))
    return f"{op}|{cin}x{hw[0]}x{hw[1]}|{cout}|s{stride}|{options}"


def candidate_keys(layers: Sequence[PFLDLayer]) -> list[list[str]]:
    """The latency-table key of every candidate of every layer (op and shape, not position)."""
    keys, cin = [], 32
    for layer, hw in zip(layers, _IN_HW, strict=True):
        keys.append([_key(op, kwargs, cin, hw, layer.out_channels, layer.stride)
                     for _, op, kwargs in layer.candidates])
        cin = layer.out_channels
    return keys


def fixed_keys(num_points: int = 106) -> dict[str, str]:
    """Part name -> latency-table key of PFLD's fixed parts (the auxiliary net excluded)."""
    out = {}
    for name, (spec, cin, hw) in fixed_parts(num_points).items():
        out[name] = f"pfld_{name}|{cin}x{hw[0]}x{hw[1]}|{spec.out_channels}"
    return out


def pfld_layer_costs(kind: str = "macs", table: Any = None, num_points: int = 106,
                     layers: Sequence[PFLDLayer] | None = None) -> LayerCosts:
    """Per-candidate costs and the fixed part: ``macs``/``params`` analytically, or
    ``latency`` (ms) from ``table`` (:func:`build_pfld_table`; a missing key is an error)."""
    layers = tuple(layers or pfld_layers())
    if kind == "latency":
        from fbnas.cost.lut import MissingEntriesError

        if table is None:
            raise ValueError("latency costs need a latency table (build_pfld_table)")
        rows = candidate_keys(layers)
        fixed = list(fixed_keys(num_points).values())
        missing = table.missing([k for row in rows for k in row] + fixed)
        if missing:
            raise MissingEntriesError(missing, "the pfld space")
        return LayerCosts(tuple(tuple(table.lookup(k) for k in row) for row in rows),
                          sum(table.lookup(k) for k in fixed), "ms")
    if kind not in ("macs", "params"):
        raise ValueError(f"unknown cost kind {kind!r}; use latency, macs or params")
    pick = (lambda c: c.macs) if kind == "macs" else (lambda c: c.params)
    rows = []
    for row, hw in zip(candidate_plans(layers), _IN_HW, strict=True):
        rows.append(tuple(float(pick(plan.cost(hw)[0])) for plan in row))
    return LayerCosts(tuple(rows), float(pick(pfld_fixed_cost(num_points))), kind)


def build_pfld_table(path: str | os.PathLike | None = None, threads: int = 1,
                     budget_s: float = 0.25, rounds: int = 2, num_points: int = 106) -> Any:
    """Times every candidate and fixed part of PFLD at batch 1 (torch, eval mode,
    ``threads`` threads, the median of each round, the lowest round kept) into a
    :class:`fbnas.cost.lut.LatencyTable`; saved atomically to ``path`` when given."""
    from fbnas.cost.latency import DeviceInfo, measure
    from fbnas.cost.lut import LatencyEntry, LatencyTable

    layers = pfld_layers()
    items: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    cin = 32
    for layer, plans, keys, hw in zip(layers, candidate_plans(layers), candidate_keys(layers),
                                      _IN_HW, strict=True):
        items += [(k, plan.build(), (1, cin, *hw)) for k, plan in zip(keys, plans,
                                                                      strict=True)]
        cin = layer.out_channels
    for (_name, (spec, c, hw)), key in zip(fixed_parts(num_points).items(),
                                          fixed_keys(num_points).values(), strict=True):
        items.append((key, spec.build(), (1, c, *hw)))
    entries: dict[str, LatencyEntry] = {}
    for _ in range(rounds):
        for key, module, shape in items:
            m = measure(module.eval(), shape, threads=threads, budget_s=budget_s)
            entry = entries.setdefault(key, LatencyEntry())
            entry.rounds_ms.append(m.median_ms)
            entry.runs += m.runs
    table = LatencyTable(DeviceInfo.current("torch", threads), batch=1, rounds=rounds,
                         entries=entries, normalise=False)
    if path is not None:
        table.save(path)
    return table


# --------------------------------------------------------------------------- the supernet


def _candidate(plan: Any) -> nn.Module:
    return WeightedIRFBlock(plan) if _folds_weight(plan) else plan.build()


class PFLDSupernet(PFLDFrame, Supernet):
    """PFLD with every searched layer a :class:`MixedOp` (see the module docstring).

    Args:
        costs: :func:`pfld_layer_costs` (the expected cost sums them).
        mode: ``soft`` (every candidate, Gumbel-softmax weighted) or ``single-path``.
        channels_last: weights and activations channels-last (faster depthwise convs on CPU).
    """

    def __init__(self, costs: LayerCosts, num_points: int = 106, mode: Mode = "soft",
                 channels_last: bool = True, layers: Sequence[PFLDLayer] | None = None
                 ) -> None:
        PFLDFrame.__init__(self, num_points)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use 'soft' or 'single-path'")
        self.mode = mode
        self.pfld_space = tuple(layers or pfld_layers())
        plans = candidate_plans(self.pfld_space)
        if [len(r) for r in costs.per_layer] != [len(r) for r in plans]:
            raise ArchDefError("the costs do not match the pfld space's layers and candidates")
        self.costs = costs
        self.layers = nn.ModuleList(MixedOp([_candidate(p) for p in row], cost_row)
                                    for row, cost_row in zip(plans, costs.per_layer,
                                                             strict=True))
        most = max(len(row) for row in plans)
        self.theta = nn.Parameter(torch.zeros(len(plans), most))
        mask = torch.zeros(len(plans), most, dtype=torch.bool)
        for i, row in enumerate(plans):
            mask[i, len(row):] = True
        self.register_buffer("theta_mask", mask, persistent=False)
        self.resolution = 112
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def run_layer(self, i: int, x: torch.Tensor, sample: Any) -> torch.Tensor:
        weights, indices = sample
        layer = self.layers[i]
        return layer(x, weights[i, : len(layer.candidates)],
                     indices[i] if indices is not None else None)

    def forward(self, x: torch.Tensor, sample: PathSample | None = None, *, tau: float = 5.0
                ) -> tuple[Any, torch.Tensor]:
        """``(outputs, expected cost)``: landmarks (eval) or
        :class:`~fbnas.tasks.landmarks.models.LandmarkOutputs` (training) through ``sample``
        (drawn from torch's global RNG at ``tau`` when None)."""
        if sample is None:
            weights, indices = self.sample_weights(tau, self.mode)
        else:
            weights, indices = sample.weights, sample.indices
        outputs = self.run(x.contiguous(memory_format=self.memory_format), (weights, indices))
        cost = self.theta.new_tensor(self.costs.fixed)
        for i, layer in enumerate(self.layers):
            cost = cost + (weights[i, : len(layer.candidates)] * layer.costs).sum()
        return outputs, cost

    def choice_names(self, choices: Sequence[int]) -> list[str]:
        self.check_choices(choices)
        return [layer.candidates[c][0] for layer, c in zip(self.pfld_space, choices,
                                                           strict=True)]

    def check_choices(self, choices: Sequence[int]) -> None:
        if len(choices) != len(self.pfld_space) or any(
                not isinstance(c, int) or not 0 <= c < len(layer.candidates)
                for c, layer in zip(choices, self.pfld_space, strict=False)):
            raise ArchDefError(f"a pfld choice is one candidate index per layer "
                               f"({[len(layer.candidates) for layer in self.pfld_space]}), got "
                               f"{list(choices)}")

    def arch_def(self, choices: Sequence[int]) -> dict[str, Any]:
        return {"family": PFLD_FAMILY, "layers": self.choice_names(choices),
                "num_points": self.num_points}

    def freeze(self, choices: Sequence[int]) -> Frozen:
        return Frozen(self.arch_def(choices))

    def arch_spec(self, choices: Sequence[int]):  # noqa: D102 - no arch spec: not a chain
        raise TypeError("a PFLD architecture is no builder arch def; use arch_def()")

    def analytic_cost(self, choices: Sequence[int]) -> Cost:
        """Params and MACs of the deployed network of ``choices`` (no auxiliary net)."""
        fixed = pfld_fixed_cost(self.num_points)
        params = macs = 0
        for row, c, hw in zip(candidate_plans(self.pfld_space), choices, _IN_HW, strict=True):
            cost = row[c].cost(hw)[0]
            params, macs = params + cost.params, macs + cost.macs
        return Cost(fixed.params + params, fixed.macs + macs)

    def arch_state(self) -> dict:
        return {"theta": self.theta.detach().tolist(),
                "probabilities": self.probabilities().detach().tolist(),
                "candidates": [layer.names for layer in self.pfld_space]}


def pfld_subnet_state_dict(supernet: PFLDSupernet, choices: Sequence[int]
                           ) -> dict[str, torch.Tensor]:
    """The supernet's weights of ``choices``, keyed as the :class:`PFLDNet` of
    ``supernet.arch_def(choices)`` (the fixed parts and the auxiliary net too), so the
    subnet is fine-tuned from them instead of from scratch."""
    supernet.check_choices(choices)
    state = {}
    for key, value in supernet.state_dict().items():
        if key == "theta":
            continue
        if key.startswith("layers."):
            _, layer, _, cand, rest = key.split(".", 4)
            if int(cand) != choices[int(layer)]:
                continue
            key = f"layers.{layer}.{rest}"
        state[key] = value.detach().clone(memory_format=torch.contiguous_format)
    return state


# --------------------------------------------------------------------------- the run


def _describe(costs: LayerCosts, table: Any):
    def describe(net: PFLDSupernet, choices: list[int], derived: str) -> dict:
        analytic = net.analytic_cost(choices)
        record = {"arch_def": net.arch_def(choices), "space": "pfld", "choice": choices,
                  "choices": net.choice_names(choices),
                  "predicted_cost": costs.network_cost(choices), "cost_unit": costs.unit,
                  "params": analytic.params, "macs": analytic.macs, "resolution": 112,
                  "derived": derived}
        if derived not in (ARGMAX, "sampled"):
            record["argmax_choices"] = net.choice_names(net.derive())
        if table is not None:
            lat = pfld_layer_costs("latency", table, net.num_points, net.pfld_space)
            record["predicted_ms"] = lat.network_cost(choices)
        return record

    return describe


def run_pfld_search(data_spec: str, config: DNASConfig, out_dir: str | os.PathLike,
                    task: LandmarkTask | None = None, table: Any = None,
                    resume: bool = False, progress: Progress | None = None,
                    context: DistContext | None = None) -> SearchResult:
    """Searches the PFLD supernet on a landmark set and writes the run folder.

    ``data_spec``: a folder with ``train_data/`` and ``test_data/``. θ trains on the held-out
    share ``1 − w_share`` of the training set; ``test_data`` only validates. Settings as
    :class:`DNASConfig` (:func:`pfld_search_config` for NNI's); ``table`` for
    ``cost: latency`` (:func:`build_pfld_table`).
    """
    context = context or DistContext()
    task = task or LandmarkTask()
    if config.resolution not in (None, 112):
        raise ArchDefError(f"PFLD searches at 112x112, not {config.resolution}")
    data = task.open_datasets(data_spec, 112)
    costs = pfld_layer_costs(config.cost, table, task.num_points)
    if config.target is not None and config.target < costs.cheapest:
        raise ArchDefError(f"target {config.target:g} {costs.unit} is below the cheapest "
                           f"network of pfld ({costs.cheapest:.4g} {costs.unit})")
    engine = SearchEngine(lambda: PFLDSupernet(costs, task.num_points, config.mode),
                          task, data, config.engine_config(), config.cost_loss(costs.cheapest),
                          context)
    run_config = {"space": "pfld", "task": task.to_dict(), "data": data_spec,
                  "world_size": context.world_size, **config.to_dict()}
    result = engine.run(Path(out_dir), resume, progress, run_config, _describe(costs, table))
    net: PFLDSupernet = result.model
    return SearchResult(result.out_dir, result.choice, net.choice_names(result.choice),
                        costs.network_cost(result.choice), costs.unit, result.records[1:],
                        result.history, result.model)


__all__ = ["PFLD_CONFIG", "PFLD_FM_SIZES", "PFLDSupernet", "build_pfld_table",
           "pfld_layer_costs", "pfld_search_config", "pfld_subnet_state_dict",
           "run_pfld_search"]
