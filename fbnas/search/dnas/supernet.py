"""The stochastic supernet of FBNetV1 (Wu et al. 2019, §3.3).

Every searchable layer is a :class:`MixedOp` over the space's candidate blocks (made by the
block registry, so any registered op can be a candidate) with one logit vector θ_l. Two
execution modes:

* ``soft`` (the paper): m_l = GumbelSoftmax(θ_l, τ), x_{l+1} = Σ_i m_{l,i} b_{l,i}(x_l);
  every candidate runs.
* ``single-path``: a hard Gumbel sample per layer and step; only the sampled candidate runs
  forward and backward, scaled by its straight-through weight (1 in the forward pass, the
  soft sample's gradient in the backward pass), so θ still gets a gradient while memory and
  time are those of one candidate.

The expected cost Σ_l Σ_i m_{l,i} cost(b_{l,i}) (plus the fixed stem and head) is
accumulated along the forward pass; it is differentiable in θ because table entries are
constants.

:class:`Supernet` follows the search engine's :class:`fbnas.search.engine.SearchableModel`
(a sample is a :class:`PathSample`, a choice one candidate index per layer),
:class:`fbnas.search.engine.DerivesWithinBand` (its costs add up over layers) and
:class:`fbnas.search.engine.PricesDistribution` (its expected cost is differentiable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import ArchSpec, HeadSpec
from fbnas.arch.unify import unify_arch_def
from fbnas.blocks.heads import head_classes, head_spec_for
from fbnas.blocks.irf import IRFBlock, IRFPlan
from fbnas.builder import BlockTrace, FBNetBuilder, build_plan
from fbnas.cost.analytic import spec_cost
from fbnas.search.derive import LayerCosts
from fbnas.search.protocols import Frozen
from fbnas.search.sampling import gumbel_softmax, masked_logits, mean_entropy
from fbnas.search.space import SearchSpace, candidate_traces, get_space

Mode = Literal["soft", "single-path"]
CostKind = Literal["latency", "macs", "params"]


def layer_costs(space: SearchSpace | str, kind: CostKind = "macs", table=None,
                resolution: int | None = None, num_classes: int = 1000, *,
                head: HeadSpec | None = None) -> LayerCosts:
    """Per-candidate costs of a space: MACs or params analytically, or latency from a table.

    With ``kind="latency"`` every candidate must be in ``table`` (a LatencyTable); the
    table's calibration (scale, and its offset in the fixed part) is applied, so costs add
    up to the table's predicted network latency. The head (``head``, else the classifier
    of ``num_classes``) is part of the fixed cost.
    """
    space = get_space(space)
    resolution = resolution or space.input_size
    if kind == "latency":
        from fbnas.cost.lut import MissingEntriesError, arch_items

        if table is None:
            raise ValueError("latency costs need a latency table")
        archs = [arch_items(a, resolution, num_classes, table.batch, name=f"cand{j}",
                            head=head)
                 for j, a in enumerate(space.all_candidate_archs())]
        missing = table.missing(k for a in archs for k in a.keys)
        if missing:
            raise MissingEntriesError(missing, f"search space {space.name}")
        n_prefix = sum(len(stage) for stage in space.prefix)
        rows = []
        for l_idx, layer in enumerate(space.layers):
            k = len(layer.candidates)
            rows.append(tuple(table.lookup(archs[(c - l_idx) % k].keys[n_prefix + l_idx])
                              * table.scale for c in range(k)))
        fixed_keys = archs[0].keys[:n_prefix] + archs[0].keys[n_prefix + len(space.layers):]
        fixed = sum(table.lookup(key) for key in fixed_keys) * table.scale
        if table.calibration is not None:  # the per-network overhead of the calibration
            fixed += table.calibration.offset_ms
        return LayerCosts(tuple(rows), fixed, "ms")
    if kind not in ("macs", "params"):
        raise ValueError(f"unknown cost kind {kind!r}; use latency, macs or params")
    layers, prefix, suffix, _ = candidate_traces(space, resolution)
    pick = (lambda t: t.cost.macs) if kind == "macs" else (lambda t: t.cost.params)
    rows = tuple(tuple(float(pick(t)) for t in row) for row in layers)
    fixed = float(sum(pick(t) for t in prefix + suffix))
    last = suffix[-1] if suffix else layers[-1][0]
    head_cost = FBNetBuilder().trace_head(head_spec_for(num_classes, head), last.out_channels,
                                          last.out_hw).cost
    fixed += head_cost.macs if kind == "macs" else head_cost.params
    return LayerCosts(rows, fixed, kind)


def _folds_weight(plan: object) -> bool:
    """Whether ``w * block(x)`` of this plan's block can fold ``w`` into the block's last BN.

    True for inverted residuals (the FBNet candidates) that end in a 1x1 projection with BN
    and nothing after it but the residual add: ``w * (BN(z) + x) = BN_w(z) + w x`` where
    ``BN_w`` has its affine weight and bias times ``w``.
    """
    if type(plan) is not IRFPlan or plan.last_act is not None or plan.drop_connect_rate:
        return False
    pwl = plan.pwl
    return (pwl is not None and pwl.act is None and pwl.upsample == 1
            and pwl.norm is not None and pwl.norm.name == "bn")


def scaled_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale * bn(x)`` in one pass: the scale multiplies BN's affine weight and bias.

    Running statistics and ``num_batches_tracked`` are updated exactly as ``bn(x)`` would.
    """
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                  else bn.momentum)
    batch_stats = bn.training or bn.running_mean is None
    keep = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if keep else None, bn.running_var if keep else None,
                        bn.weight * scale, bn.bias * scale, batch_stats, factor, bn.eps)


class WeightedIRFBlock(IRFBlock):
    """An inverted residual whose mixture weight folds into its last BN.

    Called with the input alone it is exactly an :class:`IRFBlock` (single path, derive,
    eval), with the same children and parameter names, so a derived subnet loads its weights.
    Called with ``weight`` it returns ``weight * (block(x) - x)`` for a residual block and
    ``weight * block(x)`` otherwise, in the cost of the block alone: the caller adds the
    residual terms of a layer's candidates at once.
    """

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is None:
            return super().forward(x)
        return scaled_batch_norm(self.pwl.bn, self.pwl.conv(self.projection_input(x)), weight)


def _build_candidate(trace: BlockTrace) -> nn.Module:
    if _folds_weight(trace.plan):
        return WeightedIRFBlock(trace.plan)
    return build_plan(trace)


class MixedOp(nn.Module):
    """One searchable layer: candidate blocks and their weighted (or sampled) execution.

    Soft mode computes ``Σ_i w_i b_i(x)`` candidate by candidate, as the paper does, with two
    savings that leave the result unchanged: an inverted residual's weight is folded into its
    last BN (:class:`WeightedIRFBlock`, no separate pass to scale its output), and the
    residual terms ``w_i x`` of every residual candidate and of an identity ``skip`` are added
    once, as ``(Σ w_i) x``. (Running the candidates fused, one expansion conv and one
    depthwise conv per kernel size over concatenated channels, was measured slower on CPU:
    the concatenated activations miss the cache and cost copies, docs/benchmarks.md.)
    """

    def __init__(self, candidates: Sequence[nn.Module], costs: Sequence[float]) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(candidates)
        self.register_buffer("costs", torch.tensor(list(costs), dtype=torch.float32),
                             persistent=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                index: int | None = None) -> torch.Tensor:
        """``x``: (N, C, H, W); ``weights``: (K,) mixture weights; ``index``: run only that
        candidate (single path, ``weights`` then a straight-through one-hot)."""
        if index is not None:
            return self.candidates[index](x) * weights[index]
        out = residual = None
        for w, candidate in zip(weights, self.candidates, strict=True):
            if isinstance(candidate, WeightedIRFBlock):
                y = candidate(x, w)
                if candidate.res_conn is not None:
                    residual = w if residual is None else residual + w
            elif isinstance(candidate, nn.Identity):
                candidate(x)  # no work; called so that module hooks see every candidate run
                residual = w if residual is None else residual + w
                continue
            else:
                y = candidate(x) * w
            out = y if out is None else out + y
        if residual is not None:
            out = x * residual if out is None else torch.addcmul(out, x, residual)
        return out


@dataclass(frozen=True)
class PathSample:
    """One step's architecture sample: what :meth:`Supernet.forward` runs.

    Attributes:
        weights: (layers, K) mixture weights on the supernet's device (soft: a Gumbel-softmax
            sample; single path: its straight-through one-hot).
        indices: the candidate each layer runs alone (single path), or None (every one).
    """

    weights: torch.Tensor
    indices: list[int] | None = None


MODES: tuple[Mode, ...] = ("soft", "single-path")


class Supernet(nn.Module):
    """The FBNetV1 supernet of a search space.

    Args:
        space: a registered space name or a :class:`SearchSpace`.
        costs: per-candidate costs (:func:`layer_costs`), used for the expected cost.
        num_classes: classifier outputs (the shorthand for the classification head).
        resolution: input size (default: the space's).
        channels_last: keep weights and activations in channels-last memory format; on CPU
            the depthwise convs' backward, which dominates the step in NCHW, is several times
            faster (and on CUDA the convolutions run channels-last too).
        mode: what :meth:`sample` draws: ``soft`` (every candidate runs, Gumbel-softmax
            weighted) or ``single-path`` (one sampled candidate per layer).
        head: another head, as data (a task's ``head_spec``), instead of the classifier.

    Attributes:
        theta: (layers, K) architecture logits, initialised equal (uniform distribution).
    """

    def __init__(self, space: SearchSpace | str, costs: LayerCosts, num_classes: int = 10,
                 resolution: int | None = None, channels_last: bool = True,
                 mode: Mode = "soft", *, head: HeadSpec | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use 'soft' or 'single-path'")
        self.mode = mode
        self.space = get_space(space)
        self.resolution = resolution or self.space.input_size
        layers, prefix, suffix, _ = candidate_traces(self.space, self.resolution)
        if len(costs.per_layer) != len(layers) or any(
                len(row) != len(candidates) for row, candidates in zip(costs.per_layer, layers,
                                                                       strict=True)):
            raise ArchDefError("the costs do not match the space's layers and candidates")
        self.costs = costs
        self.stem = nn.Sequential(*[build_plan(t) for t in prefix])
        self.layers = nn.ModuleList(
            MixedOp([_build_candidate(t) for t in row], cost_row)
            for row, cost_row in zip(layers, costs.per_layer, strict=True))
        self.tail = nn.Sequential(*[build_plan(t) for t in suffix])
        last = suffix[-1] if suffix else layers[-1][0]
        self.head_spec = head_spec_for(num_classes, head)
        self.num_classes = head_classes(self.head_spec)
        self.head = FBNetBuilder().build_head(self.head_spec, last.out_channels)
        most = max(len(row) for row in layers)
        # Padded (layers, K) logits; entries beyond a layer's candidates are masked to -inf.
        self.theta = nn.Parameter(torch.zeros(len(layers), most))
        mask = torch.zeros(len(layers), most, dtype=torch.bool)
        for i, row in enumerate(layers):
            mask[i, len(row):] = True
        self.register_buffer("theta_mask", mask, persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but θ (trained by the weight optimiser)."""
        return [p for name, p in self.named_parameters() if name != "theta"]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def logits(self) -> torch.Tensor:
        return masked_logits(self.theta, self.theta_mask)

    def probabilities(self) -> torch.Tensor:
        """softmax(θ) per layer: the sampling distribution P(b_l = b_{l,i})."""
        return F.softmax(self.logits(), dim=-1)

    def entropy(self) -> torch.Tensor:
        """Mean entropy (nats) of the per-layer distributions: high while undecided."""
        return mean_entropy(self.probabilities())

    def sample_weights(self, tau: float, mode: Mode) -> tuple[torch.Tensor, list[int] | None]:
        """Gumbel-softmax weights (layers, K) and, in single-path mode, the sampled indices,
        drawn from torch's global RNG (the engine draws with :meth:`sample` instead)."""
        logits = self.logits()
        if mode == "soft":
            return F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1), None
        if mode != "single-path":
            raise ValueError(f"unknown mode {mode!r}; use 'soft' or 'single-path'")
        hard = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
        return hard, hard.argmax(-1).tolist()

    def sample(self, generator: torch.Generator, tau: float) -> PathSample:
        """A step's sample in this supernet's mode, its noise drawn from ``generator`` (a CPU
        stream) and the weights on θ's device.

        In single-path mode the path is read back to the host (the layers branch on it): on
        a GPU that waits for the previous step's θ update, once per step.
        """
        logits = self.logits()
        if self.mode == "soft":
            return PathSample(gumbel_softmax(logits, tau, generator, hard=False))
        hard = gumbel_softmax(logits, tau, generator, hard=True)
        return PathSample(hard, hard.argmax(-1).tolist())

    def fixed_sample(self, choices: Sequence[int]) -> PathSample:
        """The sample that runs the architecture ``choices`` alone (weight 1 per layer)."""
        weights = torch.zeros_like(self.theta)
        device = weights.device
        weights[torch.arange(len(choices), device=device),
                torch.tensor(list(choices), device=device)] = 1.0
        return PathSample(weights, list(choices))

    def forward(self, x: torch.Tensor, sample: PathSample | None = None, *, tau: float = 5.0,
                mode: Mode | None = None, weights: torch.Tensor | None = None,
                indices: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits, expected cost) of ``x`` (N, 3, H, W) through ``sample``.

        Without a sample, ``weights`` (and ``indices``) are used if given, else a sample is
        drawn from torch's global RNG at ``tau`` in ``mode`` (default: the supernet's).
        """
        if sample is not None:
            weights, indices = sample.weights, sample.indices
        elif weights is None:
            weights, indices = self.sample_weights(tau, mode or self.mode)
        x = self.stem(x.contiguous(memory_format=self.memory_format))
        cost = self.theta.new_tensor(self.costs.fixed)  # float32, also when x is bfloat16
        for i, layer in enumerate(self.layers):
            w = weights[i, : len(layer.candidates)]
            x = layer(x, w, indices[i] if indices is not None else None)
            cost = cost + (w * layer.costs).sum()
        return self.head(self.tail(x)), cost

    def derive(self) -> list[int]:
        """The most likely architecture: argmax θ per layer."""
        return self.logits().argmax(-1).tolist()

    def sample_architectures(self, count: int, generator: torch.Generator | None = None
                             ) -> list[list[int]]:
        """``count`` architectures drawn from softmax(θ), independently per layer (on the
        CPU, where ``generator`` draws)."""
        p = self.probabilities().detach().cpu()
        return [torch.multinomial(p, 1, generator=generator).squeeze(-1).tolist()
                for _ in range(count)]

    @property
    def cost_unit(self) -> str:
        return self.costs.unit

    def expected_cost_tensor(self) -> torch.Tensor:
        """Σ_l Σ_i softmax(θ)_{l,i} cost_{l,i} plus the fixed part, differentiable in θ (a
        float32 scalar on θ's device): the cost the distribution expects, which a target
        pull with ``pull_on="expected"`` acts on (the forward pass's cost uses the sampled
        weights instead)."""
        p = self.probabilities()
        cost = self.theta.new_tensor(self.costs.fixed)
        for i, layer in enumerate(self.layers):
            cost = cost + (p[i, : len(layer.costs)] * layer.costs).sum()
        return cost

    def expected_cost(self) -> float:
        """:meth:`expected_cost_tensor` as a number (for the logs)."""
        with torch.no_grad():
            return float(self.expected_cost_tensor())

    def choice_cost(self, choices: Sequence[int]) -> float:
        return self.costs.network_cost(choices)

    def choice_costs(self) -> LayerCosts:
        return self.costs

    def log_probabilities(self) -> list[list[float]]:
        """(layers, K) log softmax(θ) (at least log 1e-30), ``-inf`` beyond each layer's
        candidates."""
        log_probs = torch.log(self.probabilities().detach().clamp_min(1e-30))
        return log_probs.masked_fill(self.theta_mask, -math.inf).tolist()

    def arch_state(self) -> dict:
        """θ, its probabilities and the candidate names per layer (``theta.json``)."""
        return {"theta": self.theta.detach().tolist(),
                "probabilities": self.probabilities().detach().tolist(),
                "candidates": [[c.name for c in layer.candidates]
                               for layer in self.space.layers]}

    def arch_def(self, choices: Sequence[int]) -> dict:
        return self.space.arch_def(list(choices))

    def freeze(self, choices: Sequence[int]) -> Frozen:
        """The arch def of ``choices`` (:meth:`arch_def`), as the engine's protocol asks."""
        return Frozen(self.arch_def(choices))

    def arch_spec(self, choices: Sequence[int]) -> ArchSpec:
        return unify_arch_def(self.arch_def(choices))

    def analytic_cost(self, choices: Sequence[int]):
        """Params and MACs of the network of ``choices`` with this supernet's classifier."""
        return spec_cost(self.arch_spec(choices), self.resolution, None, head=self.head_spec)


def subnet_state_dict(supernet: Supernet, choices: Sequence[int]) -> dict[str, torch.Tensor]:
    """The supernet's weights of one architecture, keyed as the model built from its arch def.

    ``build_model(supernet.arch_def(choices), num_classes).load_state_dict(...)`` then gives a
    network whose forward equals the supernet's single-path forward through ``choices`` (the
    way to fine-tune a derived subnet from the supernet instead of from scratch). Tensors are
    copies in the default memory format.

    Example:
        >>> from fbnas import build_model
        >>> net = Supernet("fbnet_v1_cifar", layer_costs("fbnet_v1_cifar", resolution=32,
        ...                num_classes=10), num_classes=10)
        >>> choices = net.derive()
        >>> model = build_model(net.arch_def(choices), num_classes=10)
        >>> model.load_state_dict(subnet_state_dict(net, choices))
        <All keys matched successfully>
    """
    supernet.space.check_choices(list(choices))
    spec = supernet.arch_spec(choices)
    builder = FBNetBuilder()
    builder.add_basic_args(spec.basic_args)
    traces = builder.trace(spec)
    blocks = (list(supernet.stem)
              + [layer.candidates[c] for layer, c in zip(supernet.layers, choices, strict=True)]
              + list(supernet.tail))
    if len(blocks) != len(traces):
        raise ArchDefError(f"the arch def of {list(choices)} has {len(traces)} blocks, the "
                           f"supernet path {len(blocks)}")
    state: dict[str, torch.Tensor] = {}
    parts = [(f"backbone.stages.xif{t.spec.stage_idx}_{t.spec.block_idx}.", block)
             for t, block in zip(traces, blocks, strict=True)] + [("head.", supernet.head)]
    for prefix, module in parts:
        for key, value in module.state_dict().items():
            state[prefix + key] = value.detach().clone(memory_format=torch.contiguous_format)
    return state
