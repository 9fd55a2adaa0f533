"""Property test: a malformed arch def raises ArchDefError, naming where, and nothing else.

A strategy draws small valid arch defs (4-32 channels, 32 px input, every built-in op
family), then applies one to three malformations. Each malformation is either *certain*
(the def is now invalid, and we know at which stage/block and in which phase the error
must surface) or *maybe* (it may still be valid, e.g. another width or op). For every
example ``unify_arch_def``, ``build_model`` and ``arch_cost`` must succeed or raise exactly
``ArchDefError``; when all malformations are certain, the right phases must raise and the
error must name one of the malformed places.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fbnas import ArchDefError, build_model, unify_arch_def
from fbnas.arch.unify import ARCH_DEF_KEYS
from fbnas.blocks import BLOCKS
from fbnas.blocks.irf import ConvArgs
from fbnas.blocks.options import NamedArgs
from fbnas.builder.builder import BUILDER_KEYS
from fbnas.cost import arch_cost

RESOLUTION = 32
UNIFY, BUILD, COST = 0, 1, 2  # the first phase that must fail: unify < build < cost
NO_UPSAMPLE = ("skip", "maxpool", "avgpool", "adaptive_avg_pool", "res_k3", "res_block_k3",
               "mobileone")
ZOO_OPS = ("conv_k3", "conv_k1", "ir_k3", "ir_k5_hs", "ir_k3_sehsig_hs", "ir_k3_g2",
           "ir_pool_hs", "skip", "maxpool", "adaptive_avg_pool", "res_k3", "res_block_k3",
           "mobileone")


def family(op: str) -> str | None:
    """The built-in family of a registered op name (None: an op this test has no template
    for, e.g. one a user registered)."""
    if op.startswith("conv"):
        return "conv"
    if op.startswith("ir_pool"):
        return "ir_pool"
    if op.endswith("_ese"):  # needs se_args.fm_size (its pooling's size): no plain template
        return None
    if op == "irf" or op.startswith("ir_k"):
        return "irf"
    return op if op in NO_UPSAMPLE else None


ALL_OPS = tuple(sorted({op for op in BLOCKS.names() if family(op)} | set(ZOO_OPS)))
BODY_OPS = tuple(op for op in ALL_OPS if family(op) != "ir_pool")
HEAD_OPS = tuple(op for op in ALL_OPS if family(op) == "ir_pool")
VALID_NAME = {"relu_args": "relu", "bn_args": "bn", "se_args": "se", "pw_se_args": "se",
              "res_conn_args": "default"}
CONV_ARG_KEYS = ("pw_args", "dw_args", "pwl_args")

# Wrong for every typed option of every built-in op ({} is left out: merged over an earlier
# {"name": ...} it would vanish).
CERTAINLY_WRONG: tuple[Any, ...] = (
    "zz_bogus", {"zz_bogus": 1}, [], [[]], float("nan"), float("inf"), -float("inf"),
    b"x", 1j, frozenset({1}),
)
MAYBE_VALUES: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 2, 3, 7, 0.5, 1.5, -2.0, "relu", "hswish", "se", "bn",
    "default", "projection", {"name": "se"}, {"name": "relu"}, {"name": "gn", "num_groups": 2},
    {"kernel_size": 3, "padding": 1}, {"stride": 2}, {"padding": [1, 1]}, {"padding": 0},
    {"dilation": 2}, [1, 1], [0, 2], {},
)
NOT_A_LIST: tuple[Any, ...] = (None, 3, 1.5, True, "ir_k3", {"op": "ir_k3"}, b"ir_k3")
NOT_A_DICT: tuple[Any, ...] = (None, 4, 1.5, True, "expansion", ["expansion", 4], ("x",))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- the model


@dataclass(eq=False)
class Entry:
    """One ``(op, c, s, n, *dicts)`` entry (or what a malformation put in its place)."""

    items: Any
    in_c: int
    out_c: int
    as_list: bool = False

    def render(self) -> Any:
        if isinstance(self.items, list) and not self.as_list:
            return tuple(self.items)
        return self.items

    def well_formed(self) -> bool:
        items = self.items
        return (isinstance(items, list) and len(items) >= 4 and isinstance(items[0], str)
                and items[0] in BLOCKS and all(isinstance(d, dict) for d in items[4:]))


@dataclass(eq=False)
class Stage:
    entries: Any  # list[Entry], or a malformed non-list


@dataclass(eq=False)
class Case:
    stages: list[Stage]
    top: dict[str, Any]
    all_certain: bool = True
    marks: list[tuple[Any, int]] = field(default_factory=list)  # (Entry|Stage|None, phase)
    notes: list[str] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        arch = dict(self.top)
        if "blocks" not in arch:
            arch["blocks"] = [[e.render() for e in s.entries] if isinstance(s.entries, list)
                              else s.entries for s in self.stages]
        elif arch["blocks"] is _DROP:
            del arch["blocks"]
        return arch

    def certain(self, where: Any, phase: int, note: str) -> None:
        self.marks.append((where, phase))
        self.notes.append(f"certain[{'unify build cost'.split()[phase]}]: {note}")

    def maybe(self, note: str) -> None:
        self.all_certain = False
        self.notes.append(f"maybe: {note}")

    def entries(self) -> list[Entry]:
        return [e for s in self.stages if isinstance(s.entries, list) for e in s.entries]

    def expected(self) -> dict[int, set[tuple[int | None, int | None]]]:
        """Phase -> the (stage, block) locations an error of that phase may name."""
        where: dict[int, set[tuple[int | None, int | None]]] = {UNIFY: set(), BUILD: set(),
                                                                 COST: set()}
        for obj, phase in self.marks:
            for loc in self._locate(obj, phase):
                where[phase].add(loc)
        return where

    def _locate(self, obj: Any, phase: int) -> list[tuple[int | None, int | None]]:
        if obj is None:
            return [(None, None)]
        for s, stage in enumerate(self.stages):
            if stage is obj:
                return [(s, None)]
            if not isinstance(stage.entries, list):
                continue
            expanded = 0
            for e, entry in enumerate(stage.entries):
                if entry is obj:
                    return [(s, e if phase == UNIFY else expanded)]
                items = entry.items
                repeats = items[3] if isinstance(items, list) and len(items) > 3 else 1
                expanded += repeats if _is_int(repeats) and repeats > 0 else 0
        return []


_DROP = object()  # marks a removed "blocks" key


# --------------------------------------------------------------------------- valid defs


@st.composite
def valid_block(draw: st.DrawFn, op: str, in_c: int) -> tuple[list[Any], int]:
    """A valid entry for ``op`` taking ``in_c`` channels: (items, out channels)."""
    fam = family(op)
    if op.endswith("_g2") and in_c % 2:
        op = op.replace("_g2", "")
    c = draw(st.integers(4, 32))
    stride = draw(st.sampled_from([1, 2]))
    repeats = draw(st.sampled_from([1, 1, 2]))
    opts: dict[str, Any] = {}
    maybe = st.booleans()
    if fam == "conv":
        if op in ("conv", "conv_hs"):
            k = draw(st.sampled_from([1, 3]))
            opts.update(kernel_size=k, padding=k // 2)
        if draw(maybe):
            opts["bias"] = draw(st.booleans())
        if draw(maybe):
            opts["relu_args"] = draw(st.sampled_from(
                ["relu", "relu6", "hswish", None, {"name": "leakyrelu", "negative_slope": 0.2}]))
        if draw(maybe):
            opts["bn_args"] = draw(st.sampled_from(["bn", None, {"name": "bn", "eps": 1e-3}]))
    elif fam == "irf":
        if op.endswith("_g2"):
            c += c % 2
            opts["expansion"] = draw(st.sampled_from([1, 2, 4]))
        elif draw(maybe):
            opts["expansion"] = draw(st.sampled_from([1, 2, 3, 4, 6, 1.5]))
        if op == "irf":
            opts["kernel_size"] = draw(st.sampled_from([3, 5]))
        for key in ("bias", "less_se_channels", "round_se_channels", "zero_last_bn_gamma"):
            if draw(st.integers(0, 3)) == 0:
                opts[key] = draw(st.booleans())
        if draw(st.integers(0, 3)) == 0:
            opts["se_args"] = draw(st.sampled_from(["se", "se_hsig", None]))
        if draw(st.integers(0, 3)) == 0:
            opts["relu_args"] = draw(st.sampled_from(["relu", "hswish", "swish"]))
    elif fam == "ir_pool":
        stride, repeats = 1, 1
        if draw(maybe):
            opts["expansion"] = draw(st.sampled_from([1, 2, 6]))
        if draw(st.integers(0, 3)) == 0:
            opts["se_args"] = "se"
    elif fam == "skip":
        if draw(st.integers(0, 3)) == 0:
            opts.update(bias=True, expansion=4)  # accepted and ignored
    elif fam in ("maxpool", "avgpool"):
        c = in_c
        opts["padding"] = 1  # fits any input size
    elif fam == "adaptive_avg_pool":
        c, stride = in_c, 1
        opts["output_size"] = draw(st.sampled_from([1, 2]))
    elif fam == "res_k3":
        if draw(maybe):
            opts["downsample_in_conv2"] = draw(st.booleans())
    elif fam == "res_block_k3":
        if draw(maybe):
            opts["bn_in_skip"] = draw(st.booleans())
    elif fam == "mobileone":
        opts["over_param_branches"] = draw(st.sampled_from([1, 2]))
        if draw(maybe):
            opts["deploy"] = draw(st.booleans())
    items: list[Any] = [op, c, stride, repeats]
    if opts:
        keys = list(opts)
        split = draw(st.integers(0, len(keys)))
        first, second = keys[:split], keys[split:]
        for part in (first, second):
            if part:
                items.append({k: opts[k] for k in part})
    return items, c


@st.composite
def valid_case(draw: st.DrawFn) -> Case:
    """A valid arch def: a conv stem, 1-3 stages of 1-2 blocks, maybe a pooled head."""
    in_c = 3
    stem_op = draw(st.sampled_from(["conv_k3", "conv_k3_hs", "conv_k5"]))
    c = draw(st.integers(4, 32))
    stages = [Stage([Entry([stem_op, c, 2, 1], in_c, c)])]
    in_c = c
    for _ in range(draw(st.integers(1, 3))):
        entries = []
        for _ in range(draw(st.integers(1, 2))):
            items, out = draw(valid_block(draw(st.sampled_from(BODY_OPS)), in_c))
            entries.append(Entry(items, in_c, out, as_list=draw(st.booleans())))
            in_c = out
        stages.append(Stage(entries))
    if draw(st.booleans()):
        items, out = draw(valid_block(draw(st.sampled_from(HEAD_OPS)), in_c))
        stages[-1].entries.append(Entry(items, in_c, out))
    top: dict[str, Any] = {}
    if draw(st.booleans()):
        top["basic_args"] = draw(st.fixed_dictionaries({}, optional={
            "width_divisor": st.sampled_from([1, 4, 8]),
            "relu_args": st.sampled_from(["relu", "hswish"]),
            "dw_skip_bnrelu": st.booleans(),
            "bias": st.booleans(),
        }))
    if draw(st.booleans()):
        top["input_size"] = draw(st.sampled_from([32, 224]))
    return Case(stages, top)


# --------------------------------------------------------------------------- malformations

identifiers = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)


def _pick_entry(draw: st.DrawFn, case: Case, well_formed: bool = False) -> Entry | None:
    entries = [e for e in case.entries() if e.well_formed() or not well_formed]
    return draw(st.sampled_from(entries)) if entries else None


def _stage_of(case: Case, entry: Entry) -> Stage:
    return next(s for s in case.stages if isinstance(s.entries, list) and entry in s.entries)


def _set_kwarg(entry: Entry, key: str, value: Any) -> None:
    """Appends ``{key: value}`` as the last kwarg dict, so it wins the merge."""
    entry.items.append({key: value})


def _settable(op: str) -> list[str]:
    opdef = BLOCKS.get(op)
    return sorted(set(opdef.schema.fields) - set(opdef.fixed))


def m_entry_not_a_list(draw, case):
    entry = _pick_entry(draw, case)
    if entry is None:
        return m_unknown_top_key(draw, case)
    entry.items = draw(st.sampled_from(NOT_A_LIST))
    case.certain(entry, UNIFY, f"entry -> {entry.items!r}")


def m_entry_too_short(draw, case):
    entry = _pick_entry(draw, case)
    if entry is None or not isinstance(entry.items, list):
        return m_unknown_top_key(draw, case)
    entry.items = entry.items[:draw(st.integers(0, 1))]
    case.certain(entry, UNIFY, f"entry truncated to {entry.items!r}")


def m_bad_position(draw, case):
    """A wrong value at op / out_channels / stride / repeats."""
    entry = _pick_entry(draw, case)
    if entry is None or not isinstance(entry.items, list) or len(entry.items) < 4:
        return m_unknown_top_key(draw, case)
    position = draw(st.integers(0, 3))
    bad = {
        0: st.sampled_from([None, 3, "", True, ["ir_k3"], 1.5]),
        1: st.one_of(st.integers(-64, 0), st.sampled_from([True, False, 8.0, "8", None, [8]])),
        2: st.sampled_from([0, True, False, 2.0, "2", None, [2]]),
        3: st.one_of(st.integers(-5, -1), st.sampled_from([True, False, 1.0, "1", None])),
    }[position]
    entry.items[position] = draw(bad)
    case.certain(entry, UNIFY, f"position {position} -> {entry.items[position]!r}")


def m_kwargs_not_a_dict(draw, case):
    entry = _pick_entry(draw, case)
    if entry is None or not isinstance(entry.items, list) or len(entry.items) < 4:
        return m_unknown_top_key(draw, case)
    bad = draw(st.one_of(st.sampled_from(NOT_A_DICT),
                         st.sampled_from([{1: 2}, {None: "x"}, {("a",): 1}])))
    if len(entry.items) > 4 and draw(st.booleans()):
        entry.items[draw(st.integers(4, len(entry.items) - 1))] = bad
    else:
        entry.items.append(bad)
    case.certain(entry, UNIFY, f"kwargs -> {bad!r}")


def m_stage_not_a_list(draw, case):
    stage = draw(st.sampled_from(case.stages))
    stage.entries = draw(st.sampled_from([3, "ir_k3", {"a": 1}, None, 2.5]))
    case.certain(stage, UNIFY, f"stage -> {stage.entries!r}")


def m_unknown_op(draw, case):
    entry = _pick_entry(draw, case, well_formed=True)
    if entry is None:
        return m_unknown_top_key(draw, case)
    entry.items[0] = draw(identifiers.filter(lambda name: name not in BLOCKS))
    case.certain(entry, BUILD, f"op -> {entry.items[0]!r}")


def m_unknown_kwarg(draw, case):
    entry = _pick_entry(draw, case, well_formed=True)
    if entry is None:
        return m_unknown_top_key(draw, case)
    opdef = BLOCKS.get(entry.items[0])
    key = draw(identifiers.filter(
        lambda k: k not in opdef.schema.fields and k not in opdef.ignored))
    _set_kwarg(entry, key, draw(st.sampled_from(MAYBE_VALUES + CERTAINLY_WRONG)))
    case.certain(entry, BUILD, f"unknown kwarg {key!r}")


def m_mistyped_kwarg(draw, case):
    """A value of the wrong type (or a nested wrong value) for an option the op has."""
    entry = _pick_entry(draw, case, well_formed=True)
    keys = _settable(entry.items[0]) if entry is not None else []
    if not keys:
        return m_unknown_kwarg(draw, case)
    key = draw(st.sampled_from(keys))
    annotation = BLOCKS.get(entry.items[0]).schema.fields[key][0]
    nested: list[Any] = []
    if annotation == ConvArgs:
        nested = [{"kernel_size": "x"}, {"padding": [1]}, {"zz_bogus": 1}, {"dilation": 0},
                  {"stride": "2"}, {"kernel_size": -1}, {"bias": 1}]
    elif annotation == NamedArgs and key in VALID_NAME:
        name = VALID_NAME[key]
        nested = [{"name": "bogus"}, {"name": 3}, {"name": name, "zz_bogus": 1}]
        if key == "relu_args":
            nested.append({"name": "prelu", "num_parameters": "x"})
        if key == "bn_args":
            nested.append({"name": "bn", "momentum": "x"})
        if key in ("se_args", "pw_se_args"):
            nested += [{"name": "se", "relu_args": 3}, {"name": "se", "relu_args": "bogus"}]
    value = draw(st.sampled_from(list(CERTAINLY_WRONG) + nested))
    _set_kwarg(entry, key, value)
    case.certain(entry, BUILD, f"{key} -> {value!r}")


def m_fixed_override(draw, case):
    entries = [e for e in case.entries() if e.well_formed() and BLOCKS.get(e.items[0]).fixed]
    if not entries:
        return m_mistyped_kwarg(draw, case)
    entry = draw(st.sampled_from(entries))
    fixed = BLOCKS.get(entry.items[0]).fixed
    key = draw(st.sampled_from(sorted(fixed)))
    value = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 3.0, True, "3", None]).filter(
        lambda v: not (v == fixed[key] and type(v) is type(fixed[key]))))
    _set_kwarg(entry, key, value)
    case.certain(entry, BUILD, f"fixed {key} -> {value!r}")


def m_groups_not_dividing(draw, case):
    entries = [e for e in case.entries() if e.well_formed() and family(e.items[0]) == "conv"]
    if not entries:
        return m_mistyped_kwarg(draw, case)
    entry = draw(st.sampled_from(entries))
    groups = draw(st.integers(-2, 9))
    _set_kwarg(entry, "groups", groups)
    if groups < 1 or entry.in_c % groups or entry.items[1] % groups:
        case.certain(entry, BUILD, f"groups={groups} for {entry.in_c}->{entry.items[1]}")
    else:
        case.maybe(f"groups={groups} divides {entry.in_c}->{entry.items[1]}")


def m_negative_stride(draw, case):
    entries = [e for e in case.entries() if e.well_formed() and e.items[0] in NO_UPSAMPLE]
    if not entries:
        return m_bad_position(draw, case)
    entry = draw(st.sampled_from(entries))
    entry.items[2] = draw(st.integers(-4, -1))
    case.certain(entry, BUILD, f"{entry.items[0]} stride {entry.items[2]}")


def m_pool_channel_mismatch(draw, case):
    """Inserts a maxpool whose out_channels differ from its input."""
    stages = [s for s in case.stages if isinstance(s.entries, list) and s.entries]
    if not stages:
        return m_unknown_top_key(draw, case)
    stage = draw(st.sampled_from(stages))
    position = draw(st.integers(0, len(stage.entries)))
    in_c = (stage.entries[position].in_c if position < len(stage.entries)
            else stage.entries[-1].out_c)
    out = draw(st.integers(1, 40).filter(lambda c: c != in_c))
    entry = Entry(["maxpool", out, 1, 1, {"padding": 1}], in_c, out)
    stage.entries.insert(position, entry)
    case.certain(entry, BUILD, f"maxpool {in_c} -> {out}")


def m_input_too_small(draw, case):
    stages = [s for s in case.stages if isinstance(s.entries, list) and s.entries]
    if not stages:
        return m_unknown_top_key(draw, case)
    last = stages[-1].entries[-1]
    entry = Entry(["maxpool", last.out_c, 1, 1, {"kernel_size": 40}], last.out_c, last.out_c)
    stages[-1].entries.append(entry)
    case.certain(entry, COST, "a 40x40 pool at <= 16 px")


def m_unknown_top_key(draw, case):
    key = draw(st.one_of(identifiers, st.integers(), st.none()).filter(
        lambda k: k not in ARCH_DEF_KEYS))
    case.top[key] = draw(st.sampled_from(MAYBE_VALUES))
    case.certain(None, UNIFY, f"top-level key {key!r}")


def m_bad_blocks(draw, case):
    case.top["blocks"] = draw(st.sampled_from([None, 3, "ir_k3", {"a": 1}, _DROP]))
    case.certain(None, UNIFY, "blocks not a list / missing")


def m_bad_input_size(draw, case):
    case.top["input_size"] = draw(st.one_of(
        st.integers(-300, 0), st.sampled_from([True, False, 32.0, "32", [32]])))
    case.certain(None, UNIFY, f"input_size -> {case.top['input_size']!r}")


def m_bad_basic_args(draw, case):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        case.top["basic_args"] = draw(st.sampled_from([[], 0, "", False, 3, ["bias"], 1.5]))
        case.certain(None, UNIFY, f"basic_args -> {case.top['basic_args']!r}")
        return
    basic = case.top.get("basic_args")
    if basic is None:
        basic = case.top["basic_args"] = {}
    if not isinstance(basic, dict):
        return m_unknown_top_key(draw, case)
    if kind == 1:
        known = BLOCKS.all_option_names() | BUILDER_KEYS
        key = draw(identifiers.filter(lambda k: k not in known))
        basic[key] = draw(st.sampled_from(MAYBE_VALUES))
        case.certain(None, BUILD, f"basic_args key {key!r}")
    elif kind == 2:
        basic[draw(st.sampled_from([1, None, ("a",)]))] = 1
        case.certain(None, UNIFY, "basic_args non-string key")
    else:
        basic["width_divisor"] = draw(st.sampled_from([0, -1, -8, "8", 8.0, True, None, [8]]))
        case.certain(None, BUILD, f"basic_args width_divisor {basic['width_divisor']!r}")


# ---- malformations that may leave the def valid


def m_maybe_kwarg(draw, case):
    entry = _pick_entry(draw, case, well_formed=True)
    if entry is None:
        return case.maybe("nothing")
    key = draw(st.sampled_from(_settable(entry.items[0]) + list(BLOCKS.get(entry.items[0])
                                                               .ignored) + ["kernel_size"]))
    value = draw(st.sampled_from(MAYBE_VALUES))
    _set_kwarg(entry, key, value)
    case.maybe(f"{entry.items[0]} {key} -> {value!r}")


def m_maybe_position(draw, case):
    entry = _pick_entry(draw, case)
    if entry is None or not isinstance(entry.items, list) or len(entry.items) < 4:
        return case.maybe("nothing")
    position = draw(st.integers(0, 3))
    value = draw({
        0: st.sampled_from(ALL_OPS),
        1: st.integers(1, 40),
        2: st.sampled_from([-2, -1, 1, 2, 3]),
        3: st.integers(0, 3),
    }[position])
    entry.items[position] = value
    case.maybe(f"position {position} -> {value!r}")


def m_maybe_structure(draw, case):
    kind = draw(st.integers(0, 4))
    stages = [s for s in case.stages if isinstance(s.entries, list) and s.entries]
    if kind == 0 and stages:
        stage = draw(st.sampled_from(stages))
        stage.entries.pop(draw(st.integers(0, len(stage.entries) - 1)))
    elif kind == 1 and len(case.stages) > 1:
        case.stages.pop(draw(st.integers(0, len(case.stages) - 1)))
    elif kind == 2 and stages:
        stage = draw(st.sampled_from(stages))
        entry = draw(st.sampled_from(stage.entries))
        stage.entries.insert(stage.entries.index(entry), Entry(
            list(entry.items) if isinstance(entry.items, list) else entry.items,
            entry.in_c, entry.out_c))
    elif kind == 3:
        entry = _pick_entry(draw, case)
        if entry is not None and isinstance(entry.items, list):
            entry.items = entry.items[:draw(st.integers(2, 3))]
    else:
        case.top["input_size"] = draw(st.sampled_from([None, 1, 8, 32, 224]))
    case.maybe(f"structure {kind}")


def m_maybe_basic_args(draw, case):
    basic = case.top.setdefault("basic_args", {})
    if isinstance(basic, dict):
        key = draw(st.sampled_from(sorted(BLOCKS.all_option_names() | BUILDER_KEYS)))
        basic[key] = draw(st.sampled_from(MAYBE_VALUES))
    case.maybe("basic_args value")


CERTAIN = [m_entry_not_a_list, m_entry_too_short, m_bad_position, m_kwargs_not_a_dict,
           m_stage_not_a_list, m_unknown_op, m_unknown_kwarg, m_mistyped_kwarg,
           m_mistyped_kwarg, m_fixed_override, m_groups_not_dividing, m_negative_stride,
           m_pool_channel_mismatch, m_input_too_small, m_unknown_top_key, m_bad_blocks,
           m_bad_input_size, m_bad_basic_args, m_bad_basic_args]
MAYBE = [m_maybe_kwarg, m_maybe_kwarg, m_maybe_position, m_maybe_position, m_maybe_structure,
         m_maybe_basic_args]


@st.composite
def malformed_case(draw: st.DrawFn) -> Case:
    case = draw(valid_case())
    only_certain = draw(st.booleans())
    for _ in range(draw(st.integers(1, 3))):
        pool = CERTAIN if only_certain or draw(st.booleans()) else MAYBE
        draw(st.sampled_from(pool))(draw, case)
    return case


# --------------------------------------------------------------------------- the checks


def _run(phase: int, arch: dict[str, Any], forward: bool = False) -> ArchDefError | None:
    """Runs one phase; returns its ArchDefError (any other exception fails the test).

    With ``forward``, a model that builds must also run on a 32 px input: a def that passes
    every check but cannot run is a missing check.
    """
    try:
        if phase == UNIFY:
            unify_arch_def(arch)
        elif phase == BUILD:
            model = build_model(arch, num_classes=10)
            if forward:
                with torch.no_grad():
                    out = model.eval()(torch.zeros(1, 3, RESOLUTION, RESOLUTION))
                assert out.shape == (1, 10)
        else:
            arch_cost(arch, RESOLUTION)
    except ArchDefError as error:
        return error
    return None


def _check_location(error: ArchDefError, allowed: set, notes: list[str]) -> None:
    where = (error.stage, error.block)
    assert where in allowed, f"{error} names {where}, expected one of {allowed}; {notes}"
    stage, block = where
    if stage is not None:
        prefix = f"stage {stage}" + (f", block {block}" if block is not None else "")
        assert str(error).startswith(prefix), str(error)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_case())
def test_generated_base_arch_defs_are_valid(case: Case) -> None:
    arch = case.render()
    for phase in (UNIFY, BUILD, COST):
        error = _run(phase, arch, forward=True)
        assert error is None, f"{error} in {arch}"


@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(malformed_case())
def test_malformed_arch_defs_raise_only_archdeferror_naming_where(case: Case) -> None:
    arch = case.render()
    errors = {phase: _run(phase, arch) for phase in (UNIFY, BUILD, COST)}
    if not any(errors.values()):
        _run(BUILD, arch, forward=True)  # valid after all: it must run
    if errors[UNIFY] is not None:
        # build_model and arch_cost unify first: they report the very same error.
        assert str(errors[BUILD]) == str(errors[COST]) == str(errors[UNIFY])
    for error in errors.values():
        assert error is None or type(error) is ArchDefError
    failed = [name for name, phase in (("unify", UNIFY), ("build", BUILD), ("cost", COST))
              if errors[phase] is not None]
    event(f"{'certain' if case.all_certain else 'maybe'}: first failing phase "
          f"{failed[0] if failed else 'none'}")
    if not case.all_certain:
        return
    expected = case.expected()
    allowed: set = set()
    for phase in (UNIFY, BUILD, COST):
        allowed |= expected[phase]
        if allowed:
            assert errors[phase] is not None, f"{phase=} passed; {case.notes}; {arch}"
            _check_location(errors[phase], allowed, case.notes)
        else:
            assert errors[phase] is None, f"{errors[phase]}; {case.notes}"
