"""What the suite makes of a customer message: its intent, its entities and its retrieval vector,
from three models that each run in a worker process of their own.

    understanding = Understanding.start(settings)   # three workers load the models
    understood = understanding("I lost my card")    # intent, entities, vector, ms
    knowledge_base = load_or_build(directory, sources, understanding.embeddings)

Each model runs in a `BatchingWorker`, a process of its own that batches the messages waiting
for it, so concurrent messages share forward passes, and the three run at once. Processes, not
threads: their forward passes are mostly Python dispatching small tensor operations, and on
threads of the server they queued for its interpreter lock with each other and with the HTTP
threads.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from langchain_core.embeddings import Embeddings

from core_model.batching_worker import BatchingWorker

from .intents import IntentClassifier, IntentResult
from .retrieval import EMBEDDER_NAME, MiniLMEmbeddings
from .settings import CustomerServiceSettings
from .slots import Entity, SlotExtractor

LINGER_S = 0.02  # how long each model waits to regroup concurrent messages (BatchingWorker)
MAX_BATCH = 32


@dataclass(frozen=True)
class Understood:
    """What the models made of one message: its intent, its entities, its retrieval embedding, and
    how long it took from the request's point of view, batching included (ms)."""

    intent: IntentResult
    entities: list[Entity]
    vector: list[float]
    ms: float = 0.0


# The workers' factories: module-level, so that a worker can import them.


def load_intents(adapter_dir: str, threshold: float | None) -> Callable[[list[str]], list[IntentResult]]:
    return IntentClassifier.load(adapter_dir, threshold=threshold).parse


def load_slots(adapter_dir: str) -> Callable[[list[str]], list[list[Entity]]]:
    return SlotExtractor.load(adapter_dir).extract


def load_embedder() -> Callable[[list[str]], list[list[float]]]:
    return MiniLMEmbeddings().embed_documents


class WorkerEmbeddings(Embeddings):
    """LangChain embeddings computed by the embedder's worker: the knowledge base's index is built
    and searched with the same model that embeds the messages, loaded once."""

    name = EMBEDDER_NAME  # the same vectors as MiniLMEmbeddings: an index of either serves both

    def __init__(self, worker: BatchingWorker[str, list[float]]) -> None:
        self._worker = worker

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        futures = [self._worker.submit(text) for text in texts]  # MAX_BATCH a pass
        return [future.result() for future in futures]

    def embed_query(self, text: str) -> list[float]:
        return self._worker(text)  # shares a pass with concurrent messages


class Understanding:
    def __init__(
        self,
        intents: BatchingWorker[str, IntentResult],
        slots: BatchingWorker[str, list[Entity]],
        embedder: BatchingWorker[str, list[float]],
        *,
        intent_version: str,
    ):
        self._intents, self._slots, self._embedder = intents, slots, embedder
        self.embeddings = WorkerEmbeddings(embedder)
        self.intent_version = intent_version  # stored with each prediction

    @classmethod
    def start(cls, settings: CustomerServiceSettings) -> Understanding:
        """Starts the three workers and waits until their models have loaded (in parallel); a
        model that fails to load raises its own error here."""
        start_worker = functools.partial(BatchingWorker, max_batch=MAX_BATCH, linger_s=LINGER_S)
        workers = (
            start_worker(
                load_intents, settings.intent_adapter, settings.out_of_scope_threshold, name="cs-intents"
            ),
            start_worker(load_slots, settings.slot_adapter, name="cs-slots"),
            start_worker(load_embedder, name="cs-embedder"),
        )
        try:
            for worker in workers:
                worker.wait_ready()
        except BaseException:
            for worker in workers:
                worker.close()
            raise
        return cls(*workers, intent_version=Path(settings.intent_adapter).name)

    def __call__(self, text: str) -> Understood:
        started = time.perf_counter()
        intent, entities, vector = (
            self._intents.submit(text),
            self._slots.submit(text),
            self._embedder.submit(text),
        )  # the three at once
        return Understood(
            intent.result(),
            entities.result(),
            vector.result(),
            ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def close(self) -> None:
        for worker in (self._intents, self._slots, self._embedder):
            worker.close()
