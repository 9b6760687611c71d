"""The medical service behind the API: the entity recogniser on the newest published adapter,
de-identification of every text it is given, and the federation's round records.

    service = MedicalService.start(MedicalSettings())
    service.recognize("Seen by Dr. Berg for cystic fibrosis.")
    # {"entities": [{"label": "Disease", "start": 21, "end": 36, ...}], "phi": [{"kind": "NAME", ...}],
    #  "text_deidentified": "Seen by Dr. [NAME] for cystic fibrosis.", "adapter": {...}, "latency_ms": ...}

The adapter is the registry's `medical` (what the federation published last), else the shipped
one; a newer publication is picked up at the next request. Only counts and timings are logged,
never a text, because the pattern de-identifier can miss a name.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core_model.engine.lora import WEIGHTS_FILE
from federated.records import RoundStore

from .deid import find_phi, redact
from .ner import EntityRecognizer
from .settings import MedicalSettings

log = logging.getLogger(__name__)


class NoAdapter(RuntimeError):
    """No medical adapter published yet and none shipped."""


class TextTooLong(ValueError):
    pass


class MedicalService:
    def __init__(self, settings: MedicalSettings) -> None:
        self.settings = settings
        self._recognizer: EntityRecognizer | None = None
        self._loaded: tuple[Path, float] | None = None  # the weights file and its mtime
        self._lock = threading.Lock()
        self.rounds = RoundStore(settings.rounds_database)  # the coordinator's round records

    @classmethod
    def start(cls, settings: MedicalSettings) -> MedicalService:
        service = cls(settings)
        try:
            service.recognizer()
        except NoAdapter as error:
            log.warning("medical: %s", error)
        return service

    def adapter_dir(self) -> Path:
        published = Path(self.settings.registry) / self.settings.adapter
        if (published / WEIGHTS_FILE).is_file():
            return published
        if self.settings.fallback_adapter and (Path(self.settings.fallback_adapter) / WEIGHTS_FILE).is_file():
            return Path(self.settings.fallback_adapter)
        raise NoAdapter(
            f"no medical adapter: none published at {published} (run `verticals fed run`) and none shipped"
        )

    def recognizer(self) -> EntityRecognizer:
        """The recogniser on the newest adapter, reloaded when a round published a new one."""
        directory = self.adapter_dir()
        stamp = (directory, (directory / WEIGHTS_FILE).stat().st_mtime)
        with self._lock:
            if self._recognizer is None or self._loaded != stamp:
                self._recognizer = EntityRecognizer.load(directory)
                self._loaded = stamp
                log.info("medical: serving adapter %s version %s", directory, self._recognizer.version[:12])
            return self._recognizer

    def recognize(self, text: str) -> dict[str, Any]:
        if len(text) > self.settings.max_text_chars:
            raise TextTooLong(f"text has {len(text)} characters; the limit is {self.settings.max_text_chars}")
        started = time.perf_counter()
        recognizer = self.recognizer()
        phi = find_phi(text)
        entities = [
            e
            for e in recognizer.recognize([text])[0]
            if all(e.end <= p.start or p.end <= e.start for p in phi)
        ]
        latency_ms = (time.perf_counter() - started) * 1000
        log.info(
            "medical: %d characters, %d entities, %d PHI spans, %.1f ms",
            len(text),
            len(entities),
            len(phi),
            latency_ms,
        )
        return {
            "entities": [asdict(e) for e in entities],
            "phi": [asdict(p) for p in phi],
            "text_deidentified": redact(text, phi),
            "adapter": {
                "name": str(self._loaded[0].name) if self._loaded else None,
                "version": recognizer.version,
            },
            "latency_ms": round(latency_ms, 2),
        }

    def federation(self, run_id: int | None = None) -> dict[str, Any]:
        """A run (default: the newest) with its rounds, and the list of runs."""
        runs = self.rounds.runs()
        chosen = (
            next((r for r in runs if r.id == run_id), None)
            if run_id is not None
            else (runs[0] if runs else None)
        )
        if run_id is not None and chosen is None:
            raise KeyError(f"no federated run {run_id}")
        rounds = self.rounds.rounds(chosen.id) if chosen else []
        return {
            "runs": [asdict(r) for r in runs],
            "run": asdict(chosen) if chosen else None,
            "rounds": [asdict(r) for r in rounds],
        }
