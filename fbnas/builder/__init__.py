"""ArchSpec -> nn.Module: the FBNet builder and its per-block trace."""

from fbnas.builder.builder import BlockTrace, FBNetBuilder, build_plan

__all__ = ["BlockTrace", "FBNetBuilder", "build_plan"]
