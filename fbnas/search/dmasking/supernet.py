"""The masked supernet of FBNetV2's DMaskingNAS (Wan et al. 2020, ALGORITHMS.md §2.1–2.3).

One slimmable network at the space's widest options (:class:`fbnas.slim.SlimFBNet` of
:meth:`DMaskingSpace.max_arch_def`) runs in the slim package's soft-mask mode: each search
dimension (an output width shared by the blocks a residual ties, or an inverted residual's
hidden width) multiplies its outputs by ``M = Σ_i g_i m_i``; a depthwise conv with a kernel
choice masks its weights to ``Σ_k g_k`` (centred ``k×k`` window); with several input
resolutions the first N blocks run on nearest-neighbour subsamples of the input (§2.2).
Memory and compute stay those of the widest network whatever the number of width options.

The architecture parameters are one logit vector per *group* (a searchable dimension, a
kernel choice, the resolution), padded into one ``(groups, K)`` tensor θ. The forward pass
returns the logits and the effective-shape cost (§2.3, :func:`fbnas.slim.cost.soft_cost`),
differentiable in θ; with one-hot weights both are exactly those of the derived network.

:class:`MaskedSupernet` follows the engine's :class:`fbnas.search.engine.SearchableModel`
(a choice: one option index per group) and :class:`fbnas.search.engine.PricesDistribution`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.arch.spec import FrozenKwargs
from fbnas.arch.unify import unify_arch_def
from fbnas.errors import ConfigError
from fbnas.search.dmasking.space import DMaskingSpace, load_dmasking_space
from fbnas.search.protocols import Frozen
from fbnas.search.sampling import gumbel_softmax, masked_logits, mean_entropy
from fbnas.slim.cost import output_sizes, soft_cost
from fbnas.slim.extract import extract_arch_spec
from fbnas.slim.models import SlimFBNet
from fbnas.slim.soft import SoftWidth

CostKind = Literal["macs", "params", "latency"]
GroupKind = Literal["width", "kernel", "skip", "resolution"]
SKIPPED = 1
"""The option of a ``skip`` group that replaces the block by an identity."""


@dataclass(frozen=True)
class ArchGroup:
    """One architecture decision: its kind, where it sits and its options."""

    kind: GroupKind
    label: str
    options: tuple[int, ...]


@dataclass(frozen=True)
class MaskSample:
    """One step's weights ``(groups, K)``; ``fixed``: one-hot (resolution branches with
    weight 0 are skipped)."""

    weights: torch.Tensor
    fixed: bool = False


class MaskedSupernet(nn.Module):
    """The DMaskingNAS supernet of a space.

    Args:
        space: a :class:`DMaskingSpace` or what :func:`load_dmasking_space` takes.
        num_classes: classifier outputs.
        cost: ``macs`` or ``params`` (effective-shape, §2.3), or ``latency`` (with
            ``latency``: a :class:`fbnas.search.dmasking.latency.MaskedLatency`).

    Raises:
        ConfigError: tied widths with different options, naming both layers.
    """

    def __init__(self, space: DMaskingSpace | str, num_classes: int = 10,
                 cost: CostKind = "macs", latency: Any = None,
                 channels_last: bool = True) -> None:
        super().__init__()
        self.space = load_dmasking_space(space)
        if cost not in ("macs", "params", "latency"):
            raise ConfigError(f"cost must be macs, params or latency, got {cost!r}")
        if cost == "latency" and latency is None:
            raise ConfigError("a latency cost needs a latency model (MaskedLatency)")
        self.cost_kind = cost
        self.latency = latency
        self.num_classes = num_classes
        self.resolution = self.space.max_resolution
        spec = unify_arch_def(self.space.max_arch_def())
        self.net = SlimFBNet(spec, num_classes=num_classes, dim_in=self.space.dim_in,
                             name=self.space.name, resolution=self.resolution)
        self.blocks = [b for stage in self.net.stages for b in stage.blocks]
        self.block_options = self.space.blocks()
        self.resolutions = tuple(sorted(self.space.resolutions))
        self._build_groups()
        self.sizes = [output_sizes(self.net, r) for r in self.resolutions]
        self.theta = nn.Parameter(torch.zeros(len(self.groups), self.width))
        mask = torch.ones(len(self.groups), self.width, dtype=torch.bool)
        for g, group in enumerate(self.groups):
            mask[g, : len(group.options)] = False
        self.register_buffer("theta_mask", mask, persistent=False)
        # Channels-last: on the CPU the depthwise convs' backward, which dominates the step
        # in NCHW, is several times faster (as in the DNAS supernet).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)

    # ----------------------------------------------------------------- structure

    def _build_groups(self) -> None:
        groups = self.net.channel_groups
        options: list[tuple[int, ...] | None] = [None] * groups.search_dim
        owner: list[str] = [""] * groups.search_dim
        units = [u for part in groups.unit_dimensions() for u in part]
        for b, (block, opts) in enumerate(zip(self.blocks, self.block_options, strict=True)):
            for slot, d in zip(block.width_slots, units[b], strict=True):
                if d is None:
                    continue
                wanted = opts.widths if slot.name == "out" else opts.mids
                if wanted is None:
                    raise ConfigError(f"{opts.label}: no options for its {slot.name} width")
                if options[d] is not None and options[d] != wanted:
                    raise ConfigError(f"{opts.label}: its {slot.name} width is tied (residual "
                                      f"add) to {owner[d]}, but their width options differ: "
                                      f"{list(wanted)} vs {list(options[d])}")
                if options[d] is None:
                    options[d], owner[d] = wanted, f"{opts.label} ({slot.name})"
        self.dim_options = [tuple(o) for o in options]
        self.groups: list[ArchGroup] = []
        self.dim_group: list[int | None] = []
        for d, opts in enumerate(self.dim_options):
            if len(opts) > 1:
                self.dim_group.append(len(self.groups))
                self.groups.append(ArchGroup("width", owner[d], opts))
            else:
                self.dim_group.append(None)
        self.kernel_group: list[int | None] = []
        for opts in self.block_options:
            if len(opts.kernels) > 1:
                self.kernel_group.append(len(self.groups))
                self.groups.append(ArchGroup("kernel", f"{opts.label} (kernel)", opts.kernels))
            else:
                self.kernel_group.append(None)
        self.skip_group: list[int | None] = []
        for opts in self.block_options:
            if opts.skippable:
                self.skip_group.append(len(self.groups))
                self.groups.append(ArchGroup("skip", f"{opts.label} (skip)", (0, SKIPPED)))
            else:
                self.skip_group.append(None)
        self.res_group = None
        if len(self.resolutions) > 1:
            self.res_group = len(self.groups)
            self.groups.append(ArchGroup("resolution", "input resolution", self.resolutions))
        self.width = max([len(g.options) for g in self.groups], default=1)

    @property
    def cost_unit(self) -> str:
        return "ms" if self.cost_kind == "latency" else self.cost_kind

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def logits(self) -> torch.Tensor:
        return masked_logits(self.theta, self.theta_mask)

    def probabilities(self) -> torch.Tensor:
        """softmax(θ) per group (zeros beyond its options)."""
        return F.softmax(self.logits(), dim=-1)

    def entropy(self) -> torch.Tensor:
        return mean_entropy(self.probabilities())

    # ----------------------------------------------------------------- samples

    def sample(self, generator: torch.Generator, tau: float) -> MaskSample:
        """Gumbel-softmax weights per group at ``tau`` (noise from the CPU ``generator``)."""
        return MaskSample(gumbel_softmax(self.logits(), tau, generator, hard=False))

    def one_hot(self, choice: Sequence[int]) -> torch.Tensor:
        choice = self.check_choice(choice)
        weights = torch.zeros_like(self.theta)
        for g, c in enumerate(choice):
            weights[g, c] = 1.0
        return weights

    def fixed_sample(self, choice: Sequence[int]) -> MaskSample:
        return MaskSample(self.one_hot(choice), fixed=True)

    def check_choice(self, choice: Sequence[int]) -> list[int]:
        """``choice`` as a list of ints, checked (one valid index per group)."""
        choice = [int(c) for c in choice]
        if len(choice) != len(self.groups):
            raise ConfigError(f"a choice has one index per group ({len(self.groups)}), got "
                              f"{len(choice)}")
        for g, (c, group) in enumerate(zip(choice, self.groups, strict=True)):
            if not 0 <= c < len(group.options):
                raise ConfigError(f"choice[{g}] ({group.label}): index {c} outside "
                                  f"[0, {len(group.options) - 1}]")
        return choice

    def derive(self) -> list[int]:
        """argmax θ per group."""
        return self.logits().argmax(-1).tolist() if len(self.groups) else []

    def sample_architectures(self, count: int, generator: torch.Generator | None = None
                             ) -> list[list[int]]:
        if not len(self.groups):
            return [[] for _ in range(count)]
        p = self.probabilities().detach().cpu()
        return [torch.multinomial(p, 1, generator=generator).squeeze(-1).tolist()
                for _ in range(count)]

    # ----------------------------------------------------------------- soft widths

    def _weights_of(self, weights: torch.Tensor, group: int | None, size: int) -> torch.Tensor:
        if group is None:
            return weights.new_ones(1)
        return weights[group, :size]

    def soft_widths(self, weights: torch.Tensor) -> list[SoftWidth]:
        """One :class:`SoftWidth` per search dimension of the weights ``(groups, K)``."""
        return [SoftWidth(opts, self._weights_of(weights, self.dim_group[d], len(opts)))
                for d, opts in enumerate(self.dim_options)]

    def apply(self, weights: torch.Tensor) -> torch.Tensor:
        """Sets the soft widths and kernels of ``weights``; returns the resolution weights."""
        self.net.set_soft_widths(self.soft_widths(weights))
        for block, opts, g in zip(self.blocks, self.block_options, self.kernel_group,
                                  strict=True):
            if g is not None:
                block.set_soft_kernel(SoftWidth(opts.kernels, weights[g, : len(opts.kernels)]))
        return self._weights_of(weights, self.res_group, len(self.resolutions))

    def effective_sizes(self, res_weights: torch.Tensor) -> dict[str, tuple[Any, Any]]:
        """Effective output size ``(h̄, w̄) = Σ_j g_j (h_j, w_j)`` of every conv (§2.3)."""
        if len(self.resolutions) == 1:
            return self.sizes[0]
        out = {}
        for name in self.sizes[0]:
            hw = torch.tensor([self.sizes[j][name] for j in range(len(self.resolutions))],
                              dtype=res_weights.dtype, device=res_weights.device)
            h, w = (res_weights[:, None] * hw).sum(0)
            out[name] = (h, w)
        return out

    def effective_shapes(self, weights: torch.Tensor) -> dict[str, dict[str, float]]:
        """Every conv's effective shape under ``weights``: ``{path: {in, out, h, w,
        kernel_area}}`` (§2.3: ``C̄ = Σ g_i c_i``, ``h̄ = Σ g_j h_j``), as plain numbers."""
        from fbnas.slim.cost import effective
        from fbnas.slim.ops import SlimConv2d

        with torch.no_grad():
            sizes = self.effective_sizes(self.apply(weights.double()))
            out = {}
            for name, module in self.net.named_modules():
                if isinstance(module, SlimConv2d):
                    kh, kw = module.kernel_size
                    h, w = sizes[name]
                    c_out = effective(module.soft_out, module.out_channels)
                    c_in = c_out if module.depthwise else effective(module.soft_in,
                                                                    module.in_channels)
                    area = (kh * kw if module.soft_kernel is None
                            else module.soft_kernel.effective_area)
                    out[name] = {k: float(v) for k, v in (("in", c_in), ("out", c_out),
                                                          ("h", h), ("w", w),
                                                          ("kernel_area", area))}
        return out

    def cost_of(self, weights: torch.Tensor) -> torch.Tensor:
        """The effective-shape cost of ``weights`` (``(groups, K)``), differentiable; a
        float64 scalar (float32 sums of a 600M-MAC network are off by tens of MACs, and a
        one-hot cost must equal the derived network's count exactly). Also sets the soft
        widths the forward pass runs with (from the same weights)."""
        weights = weights.double()
        res = self.apply(weights)
        if self.cost_kind == "latency":
            return self.latency.expected_ms(self, weights)
        sizes = self.effective_sizes(res)
        params, macs = soft_cost(self.net, sizes)
        value = macs if self.cost_kind == "macs" else params
        for block, g in zip(self.blocks, self.skip_group, strict=True):
            if g is not None:  # a skipped block costs nothing: g_skip times its cost off
                b_params, b_macs = soft_cost(block, sizes, block.slim_path + ".")
                value = value - weights[g, SKIPPED] * (b_macs if self.cost_kind == "macs"
                                                       else b_params)
        return value.reshape(())

    # ----------------------------------------------------------------- forward

    def _subsample(self, x: torch.Tensor, size: int) -> torch.Tensor:
        full = x.shape[-1]
        if size == full:
            return x
        index = (torch.arange(size, device=x.device) * full) // size
        return x.index_select(2, index).index_select(3, index).contiguous(
            memory_format=self.memory_format)

    def _scatter(self, y: torch.Tensor, full: int) -> torch.Tensor:
        """Zero-interspersed: ``y`` placed at the nearest-neighbour positions of ``full``."""
        size = y.shape[-1]
        if size == full:
            return y
        index = (torch.arange(size, device=y.device) * full) // size
        out = y.new_zeros(*y.shape[:2], full, full)
        out[:, :, index[:, None], index[None, :]] = y
        return out

    def _run(self, x: torch.Tensor, start: int, stop: int, weights: torch.Tensor
             ) -> torch.Tensor:
        """Blocks ``start:stop``; a block with a skip choice mixes itself with the
        identity, ``g_block · block(x) + g_skip · x`` (FBNetV1-style)."""
        for block, g in zip(self.blocks[start:stop], self.skip_group[start:stop],
                            strict=True):
            if g is None:
                x = block(x)
            else:
                w = weights[g, :2].to(x.dtype)
                x = w[0] * block(x) + w[SKIPPED] * x
        return x

    def forward(self, x: torch.Tensor, sample: MaskSample | torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, cost)`` of ``x`` ``(N, C, R_max, R_max)`` under ``sample``."""
        if isinstance(sample, torch.Tensor):
            sample = MaskSample(sample)
        weights = sample.weights
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ConfigError(f"the supernet takes {self.resolution}x{self.resolution} inputs "
                              f"(the largest resolution), got {tuple(x.shape[-2:])}")
        x = x.contiguous(memory_format=self.memory_format)
        cost = self.cost_of(weights)
        res = self._weights_of(weights, self.res_group, len(self.resolutions))
        head = self.net.head
        if len(self.resolutions) == 1:
            x = self._run(x, 0, len(self.blocks), weights)
            return head(x), cost
        n = self.space.resolved_blocks
        logits = mixed = None
        scale = self.space.stride_product(n)
        active = (res.detach().cpu() != 0).tolist() if sample.fixed else [True] * len(res)
        for j, size in enumerate(self.resolutions):
            if not active[j]:
                continue
            y = self._run(self._subsample(x, size), 0, n, weights)
            if n == len(self.blocks):  # pooled over its real positions: the plain network
                part = res[j] * head(y)
                logits = part if logits is None else logits + part
            else:
                part = res[j] * self._scatter(y, self.resolution // scale)
                mixed = part if mixed is None else mixed + part
        if mixed is not None:
            logits = head(self._run(mixed, n, len(self.blocks), weights))
        return logits, cost

    # ----------------------------------------------------------------- costs

    def expected_cost_tensor(self) -> torch.Tensor:
        """The cost at the noise-free weights softmax(θ)."""
        return self.cost_of(self.probabilities())

    def expected_cost(self) -> float:
        with torch.no_grad():
            return float(self.expected_cost_tensor())

    def noise_free_cost(self, tau: float) -> float:
        """The cost at softmax(θ / τ): the forward pass's cost without Gumbel noise."""
        with torch.no_grad():
            return float(self.cost_of(F.softmax(self.logits() / tau, dim=-1)))

    def choice_cost(self, choice: Sequence[int]) -> float:
        with torch.no_grad():
            return float(self.cost_of(self.one_hot(choice)))

    def cost_range(self) -> tuple[float, float]:
        """(cheapest, dearest): every group at its first / last option."""
        first = [0] * len(self.groups)
        last = [len(g.options) - 1 for g in self.groups]
        return self.choice_cost(first), self.choice_cost(last)

    # ----------------------------------------------------------------- deriving

    def derive_near_target(self, target: float, band: float, max_moves: int = 200
                           ) -> tuple[list[int], str]:
        """The argmax if its cost is within ±``band`` of ``target``; else, from the argmax,
        greedy moves of one group to a neighbouring option, each the one that loses the
        least log-probability per unit of ``|log(cost / target)|`` it gains, until within
        the band (or no move gets closer).

        The cost is not a sum over groups (MACs multiply input and output widths), so the
        exact most-probable-within-band search of FBNetV1 does not apply; this is its
        greedy counterpart, read back from the exact one-hot cost at every step.
        """
        choice = self.derive()
        cost = self.choice_cost(choice)
        if abs(cost / target - 1) <= band:
            return choice, "argmax"
        log_p = torch.log_softmax(self.logits().detach(), -1).cpu()
        for _ in range(max_moves):
            gap = abs(math.log(cost / target))
            best = None
            for g, group in enumerate(self.groups):
                for c in (choice[g] - 1, choice[g] + 1):
                    if not 0 <= c < len(group.options):
                        continue
                    trial = list(choice)
                    trial[g] = c
                    trial_cost = self.choice_cost(trial)
                    gain = gap - abs(math.log(trial_cost / target))
                    if gain <= 1e-12:
                        continue
                    loss = float(log_p[g, choice[g]] - log_p[g, c])
                    score = loss / gain
                    if best is None or score < best[0]:
                        best = (score, trial, trial_cost)
            if best is None:
                break
            _, choice, cost = best
            if abs(cost / target - 1) <= band:
                return choice, f"greedy from the argmax to within ±{band:.0%} of the target"
        return choice, "greedy from the argmax (closest to the target found)"

    def choice_names(self, choice: Sequence[int]) -> list[str]:
        choice = self.check_choice(choice)
        return [f"{g.label}: {g.options[c]}" for g, c in zip(self.groups, choice, strict=True)]

    def widths_of(self, choice: Sequence[int]) -> list[Any]:
        """``real_ch`` of ``choice`` (one count per layer width)."""
        choice = self.check_choice(choice)
        flat = [opts[choice[g]] if g is not None else opts[0]
                for opts, g in zip(self.dim_options, self.dim_group, strict=True)]
        groups = self.net.channel_groups
        return self.net.decode_ch(groups.arrange(flat))

    def kernels_of(self, choice: Sequence[int]) -> list[int]:
        choice = self.check_choice(choice)
        return [opts.kernels[choice[g]] if g is not None else opts.kernels[0]
                for opts, g in zip(self.block_options, self.kernel_group, strict=True)]

    def skipped_of(self, choice: Sequence[int]) -> list[bool]:
        """Per block: whether ``choice`` replaces it by an identity."""
        choice = self.check_choice(choice)
        return [g is not None and choice[g] == SKIPPED for g in self.skip_group]

    def resolution_of(self, choice: Sequence[int]) -> int:
        choice = self.check_choice(choice)
        return (self.resolutions[0] if self.res_group is None
                else self.resolutions[choice[self.res_group]])

    def arch_def(self, choice: Sequence[int]) -> dict[str, Any]:
        """The plain arch def of ``choice`` (the zoo's format; expansions as ratios)."""
        spec = extract_arch_spec(self.net, self.widths_of(choice))
        skipped = self.skipped_of(choice)
        blocks = tuple(
            b.replace(op="skip", kwargs=FrozenKwargs({})) if skip
            else b.replace(op=opts.stage_spec.op(k)) if len(opts.kernels) > 1 else b
            for b, opts, k, skip in zip(spec.blocks, self.block_options,
                                        self.kernels_of(choice), skipped, strict=True))
        return spec.replace(blocks=blocks, input_size=self.resolution_of(choice)).to_arch_def()

    def freeze(self, choice: Sequence[int]) -> Frozen:
        return Frozen(self.arch_def(choice))

    def arch_state(self) -> dict[str, Any]:
        return {"theta": self.theta.detach().tolist(),
                "probabilities": self.probabilities().detach().tolist(),
                "groups": [{"kind": g.kind, "label": g.label, "options": list(g.options)}
                           for g in self.groups]}


__all__ = ["ArchGroup", "MaskSample", "MaskedSupernet"]
