"""The pre-training corpus: stdlib file selection, the held-out split, and the dataset readers
(on the real files in the shared dataset folder).

.venv/bin/python -m pytest -q tests/core_model/train/test_corpus.py
"""

import random
from pathlib import Path

import pytest

from core_model.train.corpus import (
    EXCLUDED_DIRS,
    PRETRAINING_DATASETS,
    dataset_documents,
    detokenize,
    held_out_score,
    pretraining_documents,
    read_source,
    split_held_out,
    stdlib_files,
    stdlib_root,
)


@pytest.fixture(scope="module")
def stdlib() -> tuple[Path, list[Path]]:
    return stdlib_root(), stdlib_files()


@pytest.fixture(scope="module")
def docs() -> dict[str, list[str]]:
    return {name: list(dataset_documents(name)) for name in PRETRAINING_DATASETS}


# ---------------------------------------------------------------- standard library


def test_stdlib_files_find_json_decoder_and_skip_test_folders(stdlib):
    root, files = stdlib
    relative = [f.relative_to(root) for f in files]
    assert Path("json/decoder.py") in relative
    assert not [r for r in relative if EXCLUDED_DIRS & set(r.parts[:-1])]
    assert 500 < len(files) < 1500
    assert files == sorted(files)


def test_stdlib_files_prune_excluded_folders(tmp_path):
    for name in ["keep.py", "pkg/mod.py", "notes.txt", "test/t.py", "pkg/tests/t.py", "site-packages/x.py"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    files = stdlib_files(root=tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["keep.py", "pkg/mod.py"]


def test_held_out_score_is_pinned():
    # Changing the hash would silently move files between train and the reported held-out loss.
    assert held_out_score("json/decoder.py") == pytest.approx(0.736519921282442)


def test_split_is_deterministic_disjoint_and_complete(stdlib):
    root, files = stdlib
    train, held_out = split_held_out(files, root=root)
    assert (train, held_out) == split_held_out(files, root=root)
    assert not set(train) & set(held_out)
    assert sorted(train + held_out) == files


def test_split_is_roughly_the_fraction(stdlib):
    root, files = stdlib
    _, held_out = split_held_out(files, root=root, fraction=0.1)
    assert 0.05 < len(held_out) / len(files) < 0.15


def test_split_does_not_depend_on_other_files_or_order(stdlib):
    root, files = stdlib
    _, held_out = split_held_out(files, root=root, fraction=0.1)
    shuffled = random.Random(0).sample(files, len(files))
    subset = shuffled[: len(files) // 3]
    assert set(split_held_out(shuffled, root=root, fraction=0.1)[1]) == set(held_out)
    assert set(split_held_out(subset, root=root, fraction=0.1)[1]) == set(held_out) & set(subset)


def test_split_depends_on_relative_path_not_machine(stdlib, tmp_path):
    root, files = stdlib
    _, held_out = split_held_out(files, root=root, fraction=0.1)
    moved = [tmp_path / f.relative_to(root) for f in files]
    _, moved_held_out = split_held_out(moved, root=tmp_path, fraction=0.1)
    assert [f.relative_to(tmp_path) for f in moved_held_out] == [f.relative_to(root) for f in held_out]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_fraction_outside_open_unit_interval(fraction):
    with pytest.raises(ValueError, match="fraction"):
        split_held_out([], root=Path("/"), fraction=fraction)


def test_split_rejects_file_outside_root(tmp_path):
    with pytest.raises(ValueError, match="not under"):
        split_held_out([Path("/elsewhere/a.py")], root=tmp_path)


def test_read_source_replaces_undecodable_bytes(tmp_path):
    path = tmp_path / "latin1.py"
    path.write_bytes(b"# caf\xe9\n")
    assert read_source(path) == "# caf\ufffd\n"


# ---------------------------------------------------------------- datasets


def test_banking77_yields_each_training_utterance_without_header_or_label(docs):
    texts = docs["banking77"]
    assert len(texts) == 10003
    assert texts[0] == "I am still waiting on my card?"
    assert not [t for t in texts if "text,category" in t or t.endswith(",card_arrival")]


def test_nlupp_reads_training_folds_only(docs):
    texts = docs["nlupp_banking"]
    assert 900 < len(texts) < 1200  # folds 0-9 of 2071 examples
    assert texts[0] == "How long does it usually take to get a new pin?"


def test_sgd_dialogues_are_speaker_lines(docs):
    dialogues = docs["sgd_banks"]
    assert len(dialogues) == 727
    for dialogue in dialogues:
        lines = dialogue.splitlines()
        assert lines[0].startswith("USER: ")
        assert all(line.startswith(("USER: ", "SYSTEM: ")) for line in lines)


def test_abcd_has_conversations_guidelines_and_kb(docs):
    texts = docs["abcd_guidelines"]
    assert len(texts) == 3 + 55 + 55  # sample conversations, subflows, kb entries
    assert texts[0].startswith("agent: Hi!\n")
    assert any(t.startswith("Product Defect: Initiate Refund\n") and "[Pull up Account]" in t for t in texts)
    kb_entry = "To resolve recover_password, the agent takes these actions in order: pull-up-account, "
    assert kb_entry + "enter-details, make-password." in texts


def test_ncbi_sentences_are_rebuilt_text(docs):
    sentences = docs["ncbi_disease"]
    assert len(sentences) == 5424
    assert not [s for s in sentences if "\t" in s or "B-Disease" in s or " ," in s or "( " in s]
    first = "Identification of APC2, a homologue of the adenomatous polyposis coli tumour suppressor."
    assert sentences[0] == first
    assert any("tumour-suppressor" in s for s in sentences)


def test_detokenize_glues_punctuation():
    tokens = ["loss", "(", "APC", ")", "in", "50", "%", "of", "tumour", "-", "suppressor", "cases", "."]
    assert detokenize(tokens) == "loss (APC) in 50% of tumour-suppressor cases."


def test_bank_faq_is_refused_for_lack_of_licence():
    with pytest.raises(ValueError, match="no licence"):
        dataset_documents("bank_faq")


def test_unknown_dataset_lists_supported_names():
    with pytest.raises(ValueError, match="supported: banking77, nlupp_banking"):
        dataset_documents("mbpp")


def test_missing_dataset_root_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("VERTICALS_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "banking77")):
        dataset_documents("banking77")


# ---------------------------------------------------------------- the whole corpus


def test_pretraining_documents_hold_out_stdlib_files_only():
    train, held_out = pretraining_documents()
    assert held_out and all(label.startswith("stdlib:") for label, _ in held_out)
    assert not {label for label, _ in held_out} & {label for label, _ in train}
    assert {label for label, _ in train if not label.startswith("stdlib:")} == set(PRETRAINING_DATASETS)
    assert all(text.strip() for _, text in train + held_out)
