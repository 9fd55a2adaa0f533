"""The one exception type for a malformed architecture definition."""

from __future__ import annotations

from fbnas.errors import FbnasError


class ArchDefError(FbnasError, ValueError):
    """A malformed arch def: says where (stage, block, op, key) and what is wrong.

    Every check of user-written architecture data raises this type, so callers (the CLI,
    search code sampling candidates) need to catch exactly one exception.
    """

    def __init__(
        self,
        message: str,
        *,
        stage: int | None = None,
        block: int | None = None,
        op: str | None = None,
        key: str | None = None,
    ) -> None:
        self.stage = stage
        self.block = block
        self.op = op
        self.key = key
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.stage is not None:
            where.append(f"stage {self.stage}")
        if self.block is not None:
            where.append(f"block {self.block}")
        if self.op is not None:
            where.append(f"op {self.op!r}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def located(
        self,
        *,
        stage: int | None = None,
        block: int | None = None,
        op: str | None = None,
    ) -> ArchDefError:
        """Returns a copy that also names the stage/block/op, keeping what it already names."""
        return ArchDefError(
            self.reason,
            stage=self.stage if self.stage is not None else stage,
            block=self.block if self.block is not None else block,
            op=self.op if self.op is not None else op,
            key=self.key,
        )
