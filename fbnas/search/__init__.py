"""Architecture search: search spaces as data, and (later) DNAS, DMaskingNAS, JointNAS."""

from fbnas.search.space import SPACES, Candidate, LayerChoice, SearchSpace, get_space

__all__ = ["SPACES", "Candidate", "LayerChoice", "SearchSpace", "get_space"]
