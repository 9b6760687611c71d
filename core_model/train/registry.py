"""A directory of trained adapters, one sub-directory per name, as `train_adapter` writes them.

    registry = AdapterRegistry("var/adapters")
    registry.add("intents", "runs/intents-3")             # copies the directory in
    [info.name for info in registry.list()]               # ["intents"]
    model = registry.load("intents", load_model("embedded"), tokenizer=tokenizer)
    registry.version("intents")                           # "3f2a..." (sha256 of the adapter files)

Names are single path components without ':' (the engine's `base:adapter` separator). The
registry only files and reads directories; training is `adapters.py`, serving is the engine.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..engine.lora import CONFIG_FILE, WEIGHTS_FILE
from ..model import MoEForCausalLM
from ..tokenizer import Tokenizer
from .adapters import HEAD_CONFIG, HEAD_WEIGHTS, LABELS_FILE, METRICS_FILE, TaskModel, load_task_model

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The engine's content hash covers these two, in this order; a task head adds the rest.
_HASHED = (WEIGHTS_FILE, CONFIG_FILE, HEAD_WEIGHTS, HEAD_CONFIG, LABELS_FILE)


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    task: str  # "lm", "sequence-classification" or "token-classification"
    version: str  # content_hash of the directory
    created: datetime  # when the adapter weights were written (UTC)
    metrics: dict[str, Any] = field(default_factory=dict)  # best dev metrics from metrics.json


def content_hash(directory: str | Path) -> str:
    """sha256 over the bytes of adapter_model.safetensors, adapter_config.json and, when present,
    head.safetensors, head_config.json and labels.json, in that order.

    For an LM adapter (no head files) this is exactly the engine's `read_adapter(...).content_hash`,
    so a registry version and the engine's prefix-cache key agree. metrics.json is left out:
    it describes the training run, not the adapter.
    """
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in _HASHED:
        if (directory / name).is_file():
            digest.update((directory / name).read_bytes())
    return digest.hexdigest()


class AdapterRegistry:
    """Adapters under `root`/<name>/: list, add (copy in), load, version, delete."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if _NAME.fullmatch(p.name) and (p / CONFIG_FILE).is_file()
        )

    def list(self) -> list[AdapterInfo]:
        return [self.info(name) for name in self.names()]

    def info(self, name: str) -> AdapterInfo:
        path = self.path(name)
        head = _read_json(path / HEAD_CONFIG) or {}
        metrics = _read_json(path / METRICS_FILE) or {}
        created = datetime.fromtimestamp((path / WEIGHTS_FILE).stat().st_mtime, tz=UTC)
        return AdapterInfo(
            name=name,
            task=head.get("task", "lm"),
            version=content_hash(path),
            created=created,
            metrics=metrics.get("best", {}),
        )

    def path(self, name: str) -> Path:
        """The directory of adapter `name`; FileNotFoundError listing the known names if absent."""
        path = self.root / check_name(name)
        if not (path / CONFIG_FILE).is_file():
            known = ", ".join(self.names()) or "none"
            raise FileNotFoundError(f"no adapter named {name!r} in {self.root}; known adapters: {known}")
        return path

    def version(self, name: str) -> str:
        return content_hash(self.path(name))

    def load(
        self, name: str, base: MoEForCausalLM | str | Path, *, tokenizer: Tokenizer | None = None
    ) -> TaskModel:
        """The adapter on `base` (modified in place: pass a fresh base per adapter)."""
        return load_task_model(base, self.path(name), tokenizer=tokenizer)

    def add(self, name: str, directory: str | Path, *, overwrite: bool = False) -> AdapterInfo:
        """Copy a trained adapter directory in as `name`; an existing name needs overwrite=True."""
        source = Path(directory)
        for required in (CONFIG_FILE, WEIGHTS_FILE):
            if not (source / required).is_file():
                raise FileNotFoundError(f"{source} is not an adapter directory: it has no {required}")
        target = self.root / check_name(name)
        if target.exists() and not overwrite:
            raise FileExistsError(f"adapter {name!r} already exists in {self.root}; pass overwrite=True")
        # Copy beside the target first, so a reader never sees a half-copied adapter.
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return self.info(name)

    def delete(self, name: str) -> None:
        shutil.rmtree(self.path(name))


def check_name(name: str) -> str:
    """`name` if it is a valid adapter name, else ValueError saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid adapter name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no path separators, no ':')"
        )
    return name


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
