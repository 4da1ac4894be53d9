"""`bnexp --help`'s lists, generated from the schemas and the registries, so a new key,
normalizer, model or dataset shows up there with no edit to the help file
(`conf/hydra/help/bnexp.yaml` places them with `${bnexp_help:keys}` and friends)."""
from __future__ import annotations

import textwrap
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import get_type_hints

from omegaconf import OmegaConf

from bnexp.config import CONFIG_DIR, INCLUDED_ONLY, Config
from bnexp.datasets import DATASETS
from bnexp.models import MODELS
from bnexp.norm import NORMS

WIDTH = 96  # characters per help line


def _keys(schema: type, prefix: str) -> list[str]:
    """`prefix.key` (`prefix.key=a|b` for a choice of words) of every scalar key of a
    dataclass schema, nested ones walked."""
    hints = get_type_hints(schema)
    found = []
    for item in fields(schema):
        kind = hints[item.name]
        if item.name == "model":
            continue  # each model's keys are listed with it
        if is_dataclass(kind):
            found += _keys(kind, f"{prefix}{item.name}.")
        elif isinstance(kind, type) and issubclass(kind, Enum):
            found.append(f"{prefix}{item.name}={'|'.join(member.value for member in kind)}")
        else:
            found.append(f"{prefix}{item.name}")
    return found


def keys_text() -> str:
    """Every key, grouped, with the words an Enum key accepts."""
    return textwrap.fill("  ".join(_keys(Config, "")), WIDTH, initial_indent="  ",
                         subsequent_indent="  ", break_on_hyphens=False)


def registries_text() -> str:
    """Normalizers (with the norm.* keys each reads), models and datasets."""
    lines = ["Normalizers (norm=<kind>; the norm.* keys each one reads):"]
    lines += [f"  {kind:<13} {spec.summary}; reads {', '.join(spec.reads) or 'nothing'}"
              for kind, spec in NORMS.items()]
    lines.append("Models (model=<name>; model.* keys):")
    for name, spec in MODELS.items():
        keys = ", ".join(item.name for item in fields(spec.schema) if item.name != "name")
        lines.append(f"  {name:<13} {spec.summary}; keys {keys}")
    lines.append("Datasets (data=<name>):")
    lines += [f"  {name:<13} {'x'.join(map(str, info.image_shape))} images, {info.num_classes} "
              f"classes; looked for in "
              f"{', '.join(info.folders)} under data.root, the BNEXP_DATA folder, the user cache"
              for name, info in DATASETS.items()]
    return "\n".join(lines)


def groups_text() -> str:
    """The config groups a command line chooses from (group=option), from conf/ itself."""
    lines = []
    for group in sorted(path for path in CONFIG_DIR.iterdir() if path.is_dir()):
        if group.name in ("hydra", *INCLUDED_ONLY):
            continue
        options = sorted(str(path.relative_to(group).with_suffix(""))
                         for path in group.rglob("*.yaml"))
        lines.append(textwrap.fill(f"{group.name}: {', '.join(options)}", WIDTH,
                                   subsequent_indent="    ", break_on_hyphens=False))
    return "\n".join(lines)


SECTIONS = {"groups": groups_text, "keys": keys_text, "registries": registries_text}


def register_help_resolver() -> None:
    """`${bnexp_help:groups}`, `${bnexp_help:keys}` and `${bnexp_help:registries}` for the
    help template."""
    if not OmegaConf.has_resolver("bnexp_help"):
        OmegaConf.register_new_resolver("bnexp_help", lambda section: SECTIONS[section]())
