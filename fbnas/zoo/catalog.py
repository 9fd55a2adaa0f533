"""The model zoo as data: named arch defs (``defs/*.json``) with their published figures."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from fbnas.arch.errors import ArchDefError
from fbnas.errors import did_you_mean

ALIASES = {
    "FBNet_a": "fbnet_a",
    "FBNet_b": "fbnet_b",
    "FBNet_c": "fbnet_c",
    "MobileNetV2": "mnv2",
    "MobileNetV3": "mnv3",
    "FBNetV2_F5": "FBNetV2_L2",
}
"""Other names the reference model zoo accepts for the same architectures."""


@dataclass(frozen=True)
class ZooEntry:
    """One zoo architecture.

    Attributes:
        name: the registry name (``FBNetV3_A``).
        family: ``FBNet``, ``FBNetV2``, ``FBNetV3``, ``EfficientNet``, ``MobileNet``...
        resolution: the native input resolution.
        published: the zoo's published figures (top-1/top-5; params/FLOPs in the zoo's own
            counting convention), if any.
        reference: exact figures of the reference build (``params_total``, ``macs_224``...),
            for the models where they were recorded.
        legacy: from an older mobile-vision revision (the ``dmasking_*`` names).
    """

    name: str
    family: str
    resolution: int
    arch_def_data: str
    published: dict[str, Any] | None
    reference: dict[str, Any] | None
    legacy: bool

    @property
    def arch_def(self) -> dict[str, Any]:
        """A fresh copy of the arch def (callers may modify it)."""
        return json.loads(self.arch_def_data)


DEF_FILES = ("fbnet", "fbnet_v2", "fbnet_v3", "mobilenet", "efficientnet", "efficientnet_v2",
             "regnet", "resnet", "mobileone")
"""The definition files in ``defs/``, in listing order."""


@lru_cache(maxsize=1)
def _catalog() -> dict[str, ZooEntry]:
    entries: dict[str, ZooEntry] = {}
    folder = resources.files("fbnas.zoo") / "defs"
    for stem in DEF_FILES:
        path = folder / f"{stem}.json"
        doc = json.loads(path.read_text(encoding="utf-8"))
        for name, entry in doc["archs"].items():
            entries[name] = ZooEntry(
                name=name,
                family=doc["family"],
                resolution=int(entry["resolution"]),
                arch_def_data=json.dumps(entry["arch_def"]),
                published=copy.deepcopy(entry.get("published")),
                reference=copy.deepcopy(entry.get("reference")),
                legacy=bool(entry.get("legacy", False)),
            )
    return entries


def list_archs(family: str | None = None) -> list[str]:
    """Names of every zoo architecture (optionally of one family), in catalog order."""
    return [n for n, e in _catalog().items() if family is None or e.family == family]


def families() -> list[str]:
    """The zoo's family names."""
    return sorted({e.family for e in _catalog().values()})


def has_arch(name: str) -> bool:
    return name in _catalog() or name in ALIASES


def get_entry(name: str) -> ZooEntry:
    """The zoo entry of ``name`` (aliases accepted); unknown names suggest close ones."""
    catalog = _catalog()
    name = ALIASES.get(name, name)
    if name not in catalog:
        hint = did_you_mean(name, list(catalog) + list(ALIASES), n=4, cutoff=0.5)
        if not hint:  # a part of a name: "v3" -> the FBNetV3 models
            lowered = name.lower()
            hint = did_you_mean(name, [n for n in catalog if lowered in n.lower()][:4], 4, 0)
        raise ArchDefError(f"unknown architecture {name!r}{hint} (`fbnas zoo list` shows all "
                           f"{len(catalog)})")
    return catalog[name]


def get_arch_def(name: str) -> dict[str, Any]:
    """The arch def of a zoo model as a plain dict, with ``input_size`` set to its resolution."""
    entry = get_entry(name)
    arch = entry.arch_def
    arch.setdefault("input_size", entry.resolution)
    return arch
