"""Retrieval on the real MiniLM model: hybrid, vector and BM25 search, the index on disk, the
LangChain retriever, rebuilding when a source changes, and the FAQ evaluation.

.venv/bin/python -m pytest -q tests/apps/customer_service/test_retrieval.py
"""

import numpy as np
import pytest
from langchain_core.documents import Document

from apps.customer_service.evaluation_retrieval import evaluate_faq_retrieval, faq_pairs
from apps.customer_service.knowledge_base import DEMO_KB, KnowledgeBaseError, read_passages
from apps.customer_service.retrieval import (
    INDEX_FILE,
    MANIFEST_FILE,
    KnowledgeBase,
    KnowledgeBaseRetriever,
    MiniLMEmbeddings,
    load_or_build,
    reciprocal_rank_fusion,
    tokenize,
)
from core_model.datasets import dataset_dir


@pytest.fixture(scope="module")
def embeddings():
    return MiniLMEmbeddings()


@pytest.fixture(scope="module")
def demo_kb(embeddings):
    return KnowledgeBase.build(read_passages(DEMO_KB), embeddings)


def ids(hits):
    return [hit.passage.source_id for hit in hits]


class OtherEmbeddings(MiniLMEmbeddings):
    """The same vectors under another name, as an index built by another embedder would record."""

    name = "another-embedder"


def test_embeddings_are_unit_float32(embeddings):
    vectors = embeddings.encode(["lost card", "exchange rate"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embeddings.embed_query("lost card") == pytest.approx(vectors[0].tolist(), abs=1e-6)


def test_hybrid_ranks_lost_card_first_for_a_paraphrase(demo_kb):
    hits = demo_kb.search("someone stole my card", k=3)
    assert ids(hits)[0] == "card-lost-stolen"
    assert [hit.rank for hit in hits] == [1, 2, 3]


def test_bm25_finds_an_exact_error_code(demo_kb):
    assert ids(demo_kb.search("HP-2041", k=1, mode="bm25")) == ["app-login"]


def test_vector_search_agrees_with_numpy_cosine(demo_kb, embeddings):
    query = "how long does a transfer to another country take"
    vectors = demo_kb.index.reconstruct_n(0, len(demo_kb))
    expected = np.argsort(-(vectors @ embeddings.encode([query])[0]))[:5]
    assert ids(demo_kb.search(query, k=5, mode="vector")) == [demo_kb.passages[i].source_id for i in expected]


def test_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    assert [item for item, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_tokenize_drops_stop_words_and_keeps_codes():
    assert tokenize("What is the fee for HP-2041?") == ["fee", "hp", "2041"]


def test_empty_query_is_a_value_error(demo_kb):
    with pytest.raises(ValueError, match="query is empty"):
        demo_kb.search("   ")


def test_save_and_load_give_identical_results(demo_kb, embeddings, tmp_path):
    demo_kb.save(tmp_path / "kb")
    loaded = KnowledgeBase.load(tmp_path / "kb", embeddings)
    assert loaded.passages == demo_kb.passages and len(loaded) == len(demo_kb)
    for mode in ("hybrid", "vector", "bm25"):
        query = "how much is a new card if I lose mine"
        assert loaded.search(query, k=5, mode=mode) == demo_kb.search(query, k=5, mode=mode)


def test_corrupt_index_is_a_clear_error(demo_kb, embeddings, tmp_path):
    demo_kb.save(tmp_path / "kb")
    (tmp_path / "kb" / INDEX_FILE).write_bytes(b"not a faiss index")
    with pytest.raises(KnowledgeBaseError, match=r"index\.faiss is corrupt.*rebuild"):
        KnowledgeBase.load(tmp_path / "kb", embeddings)


def test_missing_index_and_other_embedder_are_clear_errors(demo_kb, embeddings, tmp_path):
    with pytest.raises(KnowledgeBaseError, match="not a knowledge-base index"):
        KnowledgeBase.load(tmp_path / "nothing", embeddings)
    demo_kb.save(tmp_path / "kb")
    with pytest.raises(KnowledgeBaseError, match="built with embedder .*all-MiniLM-L6-v2"):
        KnowledgeBase.load(tmp_path / "kb", OtherEmbeddings())


def test_save_refuses_to_replace_a_folder_that_is_not_an_index(demo_kb, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(KnowledgeBaseError, match="not a knowledge-base index"):
        demo_kb.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_retriever_returns_documents_with_source_ids(demo_kb):
    documents = KnowledgeBaseRetriever(knowledge_base=demo_kb, k=2).invoke("what is your IBAN format")
    assert len(documents) == 2 and all(isinstance(d, Document) for d in documents)
    assert "transfer-iban" in [d.metadata["source_id"] for d in documents]
    assert set(documents[0].metadata) == {"source_id", "title", "score", "category"}


def test_load_or_build_reuses_then_rebuilds_when_a_source_changes(embeddings, tmp_path):
    source, index_dir = tmp_path / "kb.md", tmp_path / "index"
    source.write_text("## Fees\nThere are no fees.\n\n## Hours\nWe open at 8am.\n")
    first = load_or_build(index_dir, [source], embeddings)
    manifest = (index_dir / MANIFEST_FILE).stat()
    again = load_or_build(index_dir, [source], embeddings)
    assert again.passages == first.passages
    assert (index_dir / MANIFEST_FILE).stat().st_ino == manifest.st_ino  # loaded, not rebuilt
    source.write_text(source.read_text() + "\n## Parking\nid: parking\n\nPark behind the branch.\n")
    changed = load_or_build(index_dir, [source], embeddings)
    assert len(changed) == 3 and changed.get("parking") is not None
    assert KnowledgeBase.load(index_dir, embeddings).content_hash == changed.content_hash


def test_load_or_build_without_sources_serves_the_demo(demo_kb, embeddings, tmp_path):
    assert load_or_build(tmp_path / "index", [], embeddings).passages == demo_kb.passages


PAIRS = [
    ("How do I reset my online banking password?", "Use the Forgot password link on the sign-in page."),
    ("I forgot my login password", "Use the Forgot password link on the sign-in page."),
    (
        "What is the fee for a foreign ATM withdrawal?",
        "Withdrawals abroad cost 2% after the first 200 pounds.",
    ),
    ("Can I get a paper statement?", "Paper statements are posted monthly for 3 pounds each."),
    ("How long does a mortgage application take?", "A mortgage decision takes about two weeks."),
    ("How long does a mortgage application take?", "Mortgage offers are valid for six months."),
    ("Where do I find my IBAN?", "Your IBAN is on the account details screen of the app."),
]


def test_evaluate_faq_retrieval_on_made_up_pairs(embeddings):
    report = evaluate_faq_retrieval(PAIRS, embeddings, ks=(1, 3), modes=("bm25", "hybrid"))
    assert (report["queries"], report["passages"]) == (6, 6)  # one question has two answers
    assert report["hybrid"]["recall@1"] == 1.0
    assert 0 <= report["bm25"]["recall@1"] <= report["bm25"]["recall@3"] <= 1
    assert report["hybrid"]["p50_ms"] > 0


def test_faq_pairs_squashes_whitespace_and_drops_repeats(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text('Question,Answer,Class\n"How  do I\npay?",Thus.,a\nHow do I pay?,Thus. ,b\nWhy?,,c\n')
    assert faq_pairs(path) == [("How do I pay?", "Thus.")]


@pytest.mark.slow  # embeds ~190 long answers: 23 s on a 2-core CPU busy with training
def test_hybrid_recalls_at_least_as_much_as_bm25_on_bank_faq(embeddings):
    try:
        path = dataset_dir("bank_faq") / "BankFAQs.csv"
    except FileNotFoundError:
        pytest.skip("the bank_faq dataset is not here")
    report = evaluate_faq_retrieval(faq_pairs(path)[:200], embeddings, ks=(5,), modes=("bm25", "hybrid"))
    assert report["hybrid"]["recall@5"] >= report["bm25"]["recall@5"]
