"""The reference model zoo: 122 named architectures, the classifier, reference checkpoints."""

from fbnas.zoo.catalog import ALIASES, ZooEntry, families, get_arch_def, get_entry, list_archs
from fbnas.zoo.checkpoint import load_mobile_cv_state_dict
from fbnas.zoo.model import ClsConvHead, FBNet, FBNetBackbone, build_model

__all__ = [
    "ALIASES",
    "ClsConvHead",
    "FBNet",
    "FBNetBackbone",
    "ZooEntry",
    "build_model",
    "families",
    "get_arch_def",
    "get_entry",
    "list_archs",
    "load_mobile_cv_state_dict",
]
