"""Subnet extraction: a width setting of a slim network -> a plain static fbnas model.

ALGORITHMS.md section 4.4: build a static network with the chosen widths and copy the
leading slices of every tensor (``conv.weight[:out, :in]``, depthwise ``[:c]``, BN
``[:c]``, SE convs, the classifier's ``[:, :c]``). Here the static network is an ordinary
arch def, built by the ordinary builder, so the subnet is what ``fbnas.build_model`` makes
of that arch def (it exports, counts and trains like any zoo model).

Each block's static entry keeps its op and options and changes its width; where the
reference format cannot express a sliced width, fbnas options say it (each kept only if
the resolved static block has exactly the slim block's tensor shapes):

* an inverted residual's hidden width: the original options if ``round(in * expansion)``
  still gives it, else the shortest decimal ``expansion`` that does, else
  ``mid_channels`` (a width off the divisor grid, or ``less_se_channels`` blocks, whose SE
  width depends on ``expansion``); the same for ``ir_pool``;
* ``always_pw: true`` where the hidden width came out equal to the input width (a static
  block would drop its pw conv);
* ``res_conn_args: null`` where a block without a shortcut gets equal input and output
  widths at stride 1 (a static block would add one);
* ResNet blocks: ``mid_channels`` for an inner width other than the default, and
  ``always_projection: true`` for a shortcut conv between equal widths.

At full width every block keeps its original entry: the subnet's arch def is the arch def
the slim network was built from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import ArchSpec, BlockSpec, FrozenKwargs
from fbnas.blocks import BLOCKS
from fbnas.slim.blocks import SlimBlock
from fbnas.slim.dyn_model import DynModel
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.models import SlimFBNet
from fbnas.slim.ops import SlimOp
from fbnas.zoo.model import FBNet


@contextlib.contextmanager
def widths_set(model: DynModel, real_ch: Sequence[Any] | None) -> Iterator[None]:
    """Sets ``real_ch`` (None: keep the current one) and restores the previous setting."""
    if real_ch is None:
        yield
        return
    previous = model.real_ch
    model.set_real_ch(real_ch)
    try:
        yield
    finally:
        model.set_real_ch(previous)


def active_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``module`` as its current widths use it, keyed like ``state_dict``.

    Slim ops contribute the leading slices of their tensors; other modules (activations
    with parameters, plain layers) their tensors as they are.
    """
    state: dict[str, torch.Tensor] = {}
    for path, sub in module.named_modules():
        if isinstance(sub, SlimOp):
            own = sub.active_tensors()
        else:
            own = {name: t for name, t in chain(sub.named_parameters(recurse=False),
                                                  sub.named_buffers(recurse=False))
                   if t is not None}
        for name, tensor in own.items():
            state[f"{path}.{name}" if path else name] = tensor
    return state


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in state.items()}


_SPEC_CACHE: dict[tuple[Any, ...], BlockSpec] = {}
_SPEC_CACHE_SIZE = 65536


def _static_block_spec(block: SlimBlock) -> BlockSpec:
    """The static arch-def entry of a slim block at its current widths (see module doc).

    Memoised on everything the answer depends on (the block's origin and its widths), as
    search code extracts the same candidates repeatedly.
    """
    key = (type(block), block.spec, block.basic_args, block.max_in_channels, block.in_ch,
           block.widths)
    if key not in _SPEC_CACHE:
        if len(_SPEC_CACHE) >= _SPEC_CACHE_SIZE:
            _SPEC_CACHE.clear()
        _SPEC_CACHE[key] = _find_static_block_spec(block)
    return _SPEC_CACHE[key]


def _find_static_block_spec(block: SlimBlock) -> BlockSpec:
    spec = block.spec
    op = BLOCKS.get(spec.op)
    wanted = _shapes(active_state(block))
    tried = []
    for out_channels, patch in block.static_candidates():
        kwargs = {**spec.kwargs.to_dict(), **patch}
        try:
            plan = op.plan(block.in_ch, out_channels, spec.stride, kwargs, block.basic_args)
        except ArchDefError as exc:
            tried.append(f"{patch or 'unchanged'}: {exc}")
            continue
        # Built on the CPU: small real tensors initialise ~20x faster than on the meta
        # device, where every init op runs a Python decomposition.
        with torch.device("cpu"):
            static = plan.build()
        residual = getattr(plan, "residual", None)
        if _shapes(static.state_dict()) == wanted and (
                block.residual_active is None or residual == block.residual_active):
            return spec.replace(out_channels=out_channels, kwargs=FrozenKwargs(kwargs))
        tried.append(f"{patch or 'unchanged'}: different shapes")
    raise SlimConfigError(f"{block.label}: no static {spec.op!r} block has the widths in "
                          f"{block.in_ch} -> {block.widths} (tried {'; '.join(tried)})")


def _require_arch_model(model: DynModel) -> SlimFBNet:
    if not isinstance(model, SlimFBNet):
        raise SlimConfigError(f"extraction needs a network built from an arch def "
                              f"(fbnas.slim.build_slim_model / SlimFBNet), got "
                              f"{type(model).__name__}")
    return model


def _blocks(model: SlimFBNet) -> list[SlimBlock]:
    return [block for stage in model.stages for block in stage.blocks]


def extract_arch_spec(model: SlimFBNet, real_ch: Sequence[Any] | None = None) -> ArchSpec:
    """The static arch def (as an ``ArchSpec``) of ``model`` at ``real_ch``.

    Args:
        model: a slim network built from an arch def.
        real_ch: a width setting (``model.decode_ch(model.decode_wm(wm))``); None: the
            current one. The model is left at its previous setting.

    ``.to_arch_def()`` of the result is a plain, JSON-ready arch def.
    """
    model = _require_arch_model(model)
    with widths_set(model, real_ch):
        blocks = tuple(_static_block_spec(block) for block in _blocks(model))
    return ArchSpec(blocks, model.arch_spec.basic_args, model.arch_spec.input_size)


def _copy_state(source: nn.Module, target: nn.Module, where: str) -> None:
    state = active_state(source)
    expected = target.state_dict()
    if _shapes(state) != _shapes(expected):
        raise SlimConfigError(f"{where}: the static module's tensors "
                              f"{sorted(_shapes(expected).items())} differ from the slim "
                              f"widths {sorted(_shapes(state).items())}")
    target.load_state_dict({name: t.detach().clone() for name, t in state.items()})


def extract_subnet(model: SlimFBNet, real_ch: Sequence[Any] | None = None) -> FBNet:
    """A plain static fbnas model of ``model`` at ``real_ch``, with the sliced weights.

    The result is an ``fbnas.zoo.FBNet`` (what ``fbnas.build_model`` makes of
    :func:`extract_arch_spec`'s arch def) holding the leading slices of every tensor, BN
    running statistics included; it computes what the slim network computes at those
    widths and exports like any fbnas model (``fbnas.export.to_onnx``). It is on the slim
    network's device and dtype and in its train/eval mode.

    Args:
        model: a slim network built from an arch def.
        real_ch: a width setting; None: the current one. The model is left at its previous
            setting.

    Example:
        >>> from fbnas.cost import count_params
        >>> from fbnas.slim import build_slim_model
        >>> slim = build_slim_model("slim_mbv3", num_classes=10)
        >>> wm = [0.5] * slim.search_dim
        >>> subnet = extract_subnet(slim, slim.decode_ch(slim.decode_wm(wm)))
        >>> count_params(subnet) < count_params(slim)
        True
    """
    model = _require_arch_model(model)
    with widths_set(model, real_ch):
        spec = extract_arch_spec(model)
        reference = next(chain(model.parameters(), model.buffers()))
        static = FBNet(spec, num_classes=model.num_classes, dim_in=model.dim_in,
                       name=f"{model.name}_subnet", resolution=model.resolution)
        static.to(device=reference.device, dtype=reference.dtype)
        static_blocks = list(static.backbone.stages.children())
        for block, target in zip(_blocks(model), static_blocks, strict=True):
            _copy_state(block, target, block.label)
        if model.head is not None:
            _copy_state(model.head, static.head, "head")
    static.train(model.training)
    return static


__all__ = ["active_state", "extract_arch_spec", "extract_subnet", "widths_set"]
