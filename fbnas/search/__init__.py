"""Architecture search: spaces as data, the shared engine, evolution, and the searches.

A newcomer's map of this folder:

* ``protocols.py`` — what every search needs from a space (:class:`Space`: sample, mutate,
  crossover, check, encode/decode, freeze) and from a cost (:class:`Constraint`);
* ``space.py`` — :class:`SearchSpace` (FBNetV1-style block choices per layer, as data),
  which implements :class:`Space`;
* ``evolution.py`` — the one genetic search, written against those protocols (the slim
  width search and, later, JointNAS use it);
* ``engine.py`` with ``sampling.py``, ``schedule.py``, ``cost_loss.py``, ``derive.py``,
  ``run_folder.py`` — the bilevel loop every differentiable search runs on any module that
  follows :class:`fbnas.search.engine.SearchableModel`;
* one folder per algorithm: ``dnas/`` (FBNetV1), a thin user of the engine.
"""

from fbnas.search.evolution import EvolutionConfig, EvolutionResult, evolve
from fbnas.search.protocols import Constraint, Frozen, Space
from fbnas.search.space import SPACES, Candidate, LayerChoice, SearchSpace, get_space

__all__ = [
    "SPACES",
    "Candidate",
    "Constraint",
    "EvolutionConfig",
    "EvolutionResult",
    "Frozen",
    "LayerChoice",
    "SearchSpace",
    "Space",
    "evolve",
    "get_space",
]
