"""Architecture search: search spaces as data, the shared search engine, and the searches.

``space.py`` holds the spaces; ``engine.py`` (with ``sampling``, ``schedule``, ``cost_loss``,
``derive``, ``run_folder``) the loop every differentiable search runs; ``dnas/`` is FBNetV1
DNAS, a thin user of the engine.
"""

from fbnas.search.space import SPACES, Candidate, LayerChoice, SearchSpace, get_space

__all__ = ["SPACES", "Candidate", "LayerChoice", "SearchSpace", "get_space"]
