"""ArchSpec -> nn.Module: the FBNet builder, its per-block trace and the head's."""

from fbnas.builder.builder import BlockTrace, FBNetBuilder, HeadTrace, build_head_plan, build_plan

__all__ = ["BlockTrace", "FBNetBuilder", "HeadTrace", "build_head_plan", "build_plan"]
