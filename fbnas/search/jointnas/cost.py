"""MACs, params and latency of whole populations of a joint space, and the constraints.

JointNAS filters Sobol pools of thousands of candidates and scores every child of a genetic
search, so costing one network by tracing it (:func:`fbnas.cost.arch_cost`, about a
millisecond) is the bottleneck. A network of a :class:`JointSpace` is a stem, per stage a
first block and ``depth - 1`` identical repeats, and a head; each of these costs the same
wherever it occurs with the same inputs. So every *unique* block is priced once, by the
same builder trace ``arch_cost`` uses (so the figures cannot drift: the tests compare them
with ``arch_cost`` on sampled candidates), and stored in a dense table indexed by the
value indices it depends on; a population's cost is then a few numpy gathers and sums:

    macs = stem[res, c0] + sum_i (first_i[res, c_{i-1}, c_i, k_i, e_i, se_i]
                                  + (n_i - 1) * repeat_i[res, c_i, k_i, e_i, se_i])
           + head[res, c_last]

Tables fill lazily (only the entries a population touches are traced). Latency works the
same way on a :class:`fbnas.cost.lut.LatencyTable` (entries, else its block latency
model): one lookup per unique block key, cached, then the table's calibration
(``scale * sum + offset``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fbnas.arch.unify import unify_arch_def
from fbnas.blocks.heads import head_spec_for
from fbnas.builder import FBNetBuilder
from fbnas.cost.analytic import arch_cost
from fbnas.cost.lut import ArchItems, LatencyTable, arch_items, block_key, head_key
from fbnas.errors import ConfigError
from fbnas.search.evolution import InfeasibleConstraintError
from fbnas.search.jointnas.space import FixedArchSpace, JointSpace


@dataclass
class PopulationCosts:
    """Costs of ``N`` candidates: ``macs`` and ``params`` int64, ``latency_ms`` float64
    (None without a latency table)."""

    macs: np.ndarray
    params: np.ndarray
    latency_ms: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.macs)

    def of(self, kind: str) -> np.ndarray:
        value = {"macs": self.macs, "params": self.params, "latency_ms": self.latency_ms}[kind]
        if value is None:
            raise ConfigError("a latency constraint needs a latency table (--lut FILE)")
        return value


class _Table:
    """A lazily filled dense table of (params, macs, ms) over some property indices."""

    def __init__(self, positions: Sequence[int], sizes: Sequence[int], price: Any) -> None:
        self.positions = list(positions)
        self.shape = tuple(int(s) for s in sizes)
        count = int(np.prod(self.shape))
        self.params = np.zeros(count, dtype=np.int64)
        self.macs = np.zeros(count, dtype=np.int64)
        self.ms = np.zeros(count, dtype=np.float64)
        self.known = np.zeros(count, dtype=bool)
        self.price = price  # (indices tuple) -> (params, macs, ms)

    def codes(self, full: np.ndarray, used: np.ndarray | None = None) -> np.ndarray:
        """The rows' table codes, pricing the entries not known yet; with ``used``, only
        those of the rows it marks (a repeat of a depth-1 stage is no block of its network:
        a table need not hold it, and its count is 0)."""
        codes = np.ravel_multi_index(tuple(full[:, p] for p in self.positions), self.shape)
        missing = ~self.known[codes] if used is None else ~self.known[codes] & used
        if missing.any():
            for code in np.unique(codes[missing]):
                index = np.unravel_index(int(code), self.shape)
                params, macs, ms = self.price(tuple(int(i) for i in index))
                self.params[code], self.macs[code], self.ms[code] = params, macs, ms
                self.known[code] = True
        return codes


class PopulationCost:
    """Vectorised cost of a :class:`JointSpace`'s candidates (see the module docstring).

    Args:
        space: the space (a :class:`FixedArchSpace` is costed per resolution).
        latency: a latency table for ``latency_ms`` (None: no latency).
    """

    def __init__(self, space: JointSpace, latency: LatencyTable | None = None) -> None:
        self.space = space
        self.latency = latency
        self._ms_cache: dict[str, float] = {}
        self._fixed: dict[int, tuple[int, int, float]] = {}
        if isinstance(space, FixedArchSpace):
            return
        props = space.props
        size = [len(p.values) for p in props]
        res = space.res_pos
        self._stem = _Table([res, space.stem_pos], [size[res], size[space.stem_pos]],
                            self._price_stem)
        self._first: list[_Table] = []
        self._repeat: list[_Table] = []
        previous = space.stem_pos
        for i, stage in enumerate(space.stages):
            first = [res, previous, stage.channels, stage.kernel, stage.expansion, stage.se]
            repeat = [res, stage.channels, stage.kernel, stage.expansion, stage.se]
            self._first.append(_Table(first, [size[p] for p in first],
                                      lambda idx, i=i: self._price_block(i, idx, True)))
            self._repeat.append(_Table(repeat, [size[p] for p in repeat],
                                       lambda idx, i=i: self._price_block(i, idx, False)))
            previous = stage.channels
        self._head = _Table([res, previous], [size[res], size[previous]], self._price_head)

    # ----------------------------------------------------------------- pricing one block

    def _builder(self) -> FBNetBuilder:
        builder = FBNetBuilder()
        builder.add_basic_args(self.space.basic_args)
        return builder

    def _hw(self, resolution: int, stage: int) -> int:
        """Input side of stage ``stage`` (0-based; len(stages): the head) at ``resolution``:
        every conv has "same" padding, so a stride-s layer maps h to (h - 1) // s + 1."""
        space = self.space
        h = (resolution - 1) // space.stem_stride + 1
        for layout in space.stages[:stage]:
            h = (h - 1) // layout.stride + 1
        return h

    def latency_share(self) -> tuple[int, int] | None:
        """``(from the model, all)``: the distinct block keys priced so far whose latency the
        block latency model predicted (the table holds no measurement), and all of them;
        None without latency."""
        if self.latency is None:
            return None
        keys = list(self._ms_cache)
        return len(self.latency.unmeasured(keys)), len(keys)

    def _ms(self, key: str) -> float:
        if self.latency is None:
            return 0.0
        if key not in self._ms_cache:
            self._ms_cache[key] = self.latency.lookup(key)
        return self._ms_cache[key]

    def _trace(self, entry: list[Any], dim_in: int, hw: int) -> tuple[int, int, float]:
        builder = self._builder()
        spec = unify_arch_def({"blocks": [[entry]], "basic_args": self.space.basic_args})
        (trace,) = builder.trace(spec, dim_in=dim_in, resolution=hw)
        ms = (self._ms(block_key(trace, builder.basic_args)) if self.latency is not None
              else 0.0)
        return trace.cost.params, trace.cost.macs, ms

    def _value(self, pos: int, index: int) -> Any:
        return self.space.props[pos].values[index]

    def _price_stem(self, idx: tuple[int, ...]) -> tuple[int, int, float]:
        space = self.space
        resolution, channels = self._value(space.res_pos, idx[0]), self._value(
            space.stem_pos, idx[1])
        act = f"_{space.act}" if space.act else ""
        return self._trace([f"conv_k{space.stem_kernel}{act}", channels, space.stem_stride, 1],
                           3, resolution)

    def _price_block(self, i: int, idx: tuple[int, ...], first: bool
                     ) -> tuple[int, int, float]:
        space, stage = self.space, self.space.stages[i]
        resolution = self._value(space.res_pos, idx[0])
        if first:
            previous = space.stages[i - 1].channels if i else space.stem_pos
            dim_in = self._value(previous, idx[1])
            idx = idx[1:]
            stride, hw = stage.stride, self._hw(resolution, i)
        else:
            stride, hw = 1, self._hw(resolution, i + 1)
        channels = self._value(stage.channels, idx[1])
        kernel = self._value(stage.kernel, idx[2])
        expansion = self._value(stage.expansion, idx[3])
        se = self._value(stage.se, idx[4])
        if not first:
            dim_in = channels
        entry: list[Any] = [space.block_op(kernel, se), channels, stride, 1,
                            {"expansion": expansion}]
        if space.block_options:
            entry.append(dict(space.block_options))
        return self._trace(entry, dim_in, hw)

    def _price_head(self, idx: tuple[int, ...]) -> tuple[int, int, float]:
        space = self.space
        resolution = self._value(space.res_pos, idx[0])
        channels = self._value(space.stages[-1].channels, idx[1])
        hw = self._hw(resolution, len(space.stages))
        params = macs = 0
        ms = 0.0
        if space.head_channels is not None:
            act = f"_{space.act}" if space.act else ""
            params, macs, ms = self._trace([f"ir_pool{act}", space.head_channels, 1, 1,
                                            {"expansion": space.head_expansion}],
                                           channels, hw)
            channels, hw = space.head_channels, 1
        head = head_spec_for(space.num_classes, None)
        if head is not None:
            builder = self._builder()
            trace = builder.trace_head(head, channels, (hw, hw))
            params += trace.cost.params
            macs += trace.cost.macs
            if self.latency is not None:
                ms += self._ms(head_key(trace))
        return params, macs, ms

    # ----------------------------------------------------------------- populations

    def __call__(self, samples: np.ndarray) -> PopulationCosts:
        """Costs of ``(N, dims)`` samples (one row per candidate)."""
        space = self.space
        full = space.full_batch(samples)
        if isinstance(space, FixedArchSpace):
            return self._fixed_costs(full)
        params = np.zeros(len(full), dtype=np.int64)
        macs = np.zeros(len(full), dtype=np.int64)
        ms = np.zeros(len(full), dtype=np.float64)
        tables = [(self._stem, 1), (self._head, 1)]
        for i, stage in enumerate(space.stages):
            depths = np.asarray(space.props[stage.depth].values, dtype=np.int64)
            tables += [(self._first[i], 1), (self._repeat[i], depths[full[:, stage.depth]] - 1)]
        for table, times in tables:
            codes = table.codes(full, None if np.isscalar(times) else times > 0)
            params += table.params[codes] * times
            macs += table.macs[codes] * times
            if self.latency is not None:
                ms += table.ms[codes] * times
        latency = None
        if self.latency is not None:
            calibration = self.latency.calibration
            latency = ms * self.latency.scale + (calibration.offset_ms if calibration else 0.0)
        return PopulationCosts(macs, params, latency)

    def _fixed_costs(self, full: np.ndarray) -> PopulationCosts:
        """A recipe-only space: one network per resolution, costed by ``arch_cost``."""
        space = self.space
        res = full[:, space.res_pos]
        out = np.zeros((3, len(full)), dtype=np.float64)
        for r in np.unique(res):
            if int(r) not in self._fixed:
                arch = space.arch_def_of_full([int(r) if p == space.res_pos else 0
                                               for p in range(len(space.props))])
                cost = arch_cost(arch, num_classes=space.num_classes)
                ms = (self.latency.predict(arch, num_classes=space.num_classes).predicted_ms
                      if self.latency is not None else 0.0)
                self._fixed[int(r)] = (cost.params, cost.macs, ms)
            out[:, res == r] = np.array(self._fixed[int(r)])[:, None]
        return PopulationCosts(out[1].astype(np.int64), out[0].astype(np.int64),
                               out[2] if self.latency is not None else None)

    def one(self, sample: Sequence[int]) -> PopulationCosts:
        return self(np.asarray([sample], dtype=np.int64))


# --------------------------------------------------------------------------- constraints

def joint_networks(space: JointSpace, n: int, seed: int = 0, batch: int = 1,
                   start: int = 0) -> list[ArchItems]:
    """The table items of ``n`` sampled candidates of ``space``, each at its own resolution
    (``fbnas lut build --space JOINT_SPACE`` measures their blocks; the block latency model
    of ``--model-sample`` prices the blocks of every other candidate)."""
    rng = random.Random(seed)
    out = []
    for i in range(start + n):
        arch = space.freeze(space.sample(rng)).arch_def
        if i >= start:
            out.append(arch_items(arch, None, space.num_classes, batch,
                                  name=f"{space.name}_sample{i}"))
    return out


CONSTRAINT_UNITS = {"macs": "MACs", "params": "params", "latency_ms": "ms"}
CONSTRAINT_FLAGS = {"macs": "--max-macs", "params": "--max-params", "latency_ms": "--max-ms"}


@dataclass(frozen=True)
class Constraints:
    """Budgets every chosen candidate must meet (each one given must hold; None: none)."""

    max_macs: float | None = None
    max_params: float | None = None
    max_ms: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.items():
            if not value > 0:
                raise ConfigError(f"{CONSTRAINT_FLAGS[name]} must be > 0, got {value!r}")

    def items(self) -> list[tuple[str, float]]:
        """``(cost kind, budget)`` of the constraints given."""
        pairs = [("macs", self.max_macs), ("params", self.max_params),
                 ("latency_ms", self.max_ms)]
        return [(k, float(v)) for k, v in pairs if v is not None]

    def feasible(self, costs: PopulationCosts) -> np.ndarray:
        """``(N,)`` bool: every budget holds."""
        mask = np.ones(len(costs), dtype=bool)
        for kind, budget in self.items():
            mask &= costs.of(kind) <= budget
        return mask

    def ratio(self, costs: PopulationCosts) -> np.ndarray:
        """``(N,)``: the largest cost / budget (<= 1: feasible); 0 without constraints."""
        out = np.zeros(len(costs), dtype=np.float64)
        for kind, budget in self.items():
            out = np.maximum(out, costs.of(kind) / budget)
        return out

    def describe(self) -> str:
        return ", ".join(f"{CONSTRAINT_FLAGS[k]} {v:g}" for k, v in self.items()) or "none"

    def to_dict(self) -> dict[str, float | None]:
        return {"max_macs": self.max_macs, "max_params": self.max_params,
                "max_ms": self.max_ms}


def check_feasible(constraints: Constraints, costs: PopulationCosts, what: str) -> np.ndarray:
    """The feasibility mask of a pool; raises if no candidate meets every constraint.

    Raises:
        InfeasibleConstraintError: naming each constraint with the range of that cost
            over the pool (``--max-macs 1e+05: the pool's MACs range from 2.1e+06 to
            9.8e+06``), so the user sees what budget is reachable.
    """
    mask = constraints.feasible(costs)
    if mask.any():
        return mask
    parts = []
    for kind, budget in constraints.items():
        values = costs.of(kind)
        met = int((values <= budget).sum())
        parts.append(f"{CONSTRAINT_FLAGS[kind]} {budget:g}: the pool's "
                     f"{CONSTRAINT_UNITS[kind]} range from {values.min():.4g} to "
                     f"{values.max():.4g} ({met} of {len(values)} meet it)")
    raise InfeasibleConstraintError(f"no candidate of {what} ({len(costs)} candidates) "
                                    f"meets every constraint: " + "; ".join(parts))


class SampleConstraint:
    """The constraints as one :class:`~fbnas.search.protocols.Constraint` for
    :func:`fbnas.search.evolution.evolve`: cost = largest cost / budget, target 1."""

    unit = "x budget"

    def __init__(self, cost: PopulationCost, constraints: Constraints) -> None:
        self.cost_model, self.constraints = cost, constraints
        self.target = 1.0

    def cost(self, sample: Sequence[int]) -> float:
        if not self.constraints.items():
            return 0.0
        return float(self.constraints.ratio(self.cost_model.one(sample))[0])


__all__ = ["CONSTRAINT_FLAGS", "Constraints", "PopulationCost", "PopulationCosts",
           "SampleConstraint", "check_feasible", "joint_networks"]
