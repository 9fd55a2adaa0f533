"""The Gumbel-softmax temperature τ over a search (ALGORITHMS.md §1.5).

τ starts at ``tau0`` and stays there through the weight-only warm-up; after each search
epoch it is multiplied by ``decay`` (FBNetV1: exp(-0.045) ≈ 0.956). With ``final`` set
instead, the decay is chosen so that τ reaches ``final`` at the last epoch, so short
searches sharpen their samples too.
"""

from __future__ import annotations

from dataclasses import dataclass

from fbnas.errors import ConfigError


@dataclass(frozen=True)
class TauSchedule:
    """τ per epoch: ``tau0`` through warm-up, then ``tau0 * decay ** search_epoch``.

    Attributes:
        epochs: all epochs of the search, warm-up included.
        warmup_epochs: the first epochs, which train the weights only.
        tau0: the starting temperature.
        decay: the factor per search epoch (ignored when ``final`` is set).
        final: the temperature of the last epoch, or None.
    """

    epochs: int
    warmup_epochs: int = 0
    tau0: float = 5.0
    decay: float = 0.956
    final: float | None = None

    def __post_init__(self) -> None:
        if self.tau0 <= 0 or self.decay <= 0 or (self.final is not None and self.final <= 0):
            raise ConfigError("temperatures and the decay must be > 0")

    @property
    def rate(self) -> float:
        """The factor τ is multiplied by after each search epoch."""
        if self.final is None:
            return self.decay
        steps = max(1, self.epochs - self.warmup_epochs - 1)
        return (self.final / self.tau0) ** (1 / steps)

    def tau_at(self, search_epoch: int) -> float:
        """τ of the ``search_epoch``-th search epoch (0 = the first after warm-up; a
        negative one, a warm-up epoch, gets ``tau0``)."""
        return self.tau0 * self.rate ** max(0, search_epoch)

    def tau_of_epoch(self, epoch: int) -> float:
        """τ of ``epoch`` (0-based over the whole search, warm-up included)."""
        search_epoch = epoch - self.warmup_epochs
        return self.tau0 if search_epoch < 0 else self.tau_at(search_epoch)
