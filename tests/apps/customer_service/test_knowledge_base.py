"""Reading knowledge-base files: Markdown and CSV entries, their ids, and errors that name file:line.

.venv/bin/python -m pytest -q tests/apps/customer_service/test_knowledge_base.py
"""

import logging
import textwrap

import pytest

from apps.customer_service.knowledge_base import (
    DEMO_KB,
    KnowledgeBaseError,
    Passage,
    read_csv,
    read_markdown,
    read_passages,
    read_sources,
    slugify,
)


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


KB_MD = """
# Test bank

Any text under the name is ignored.

## Lost card?
id: card-lost
category: cards

Freeze the card in the app.

Then order a new one.

## Opening hours
We answer from 8am to 8pm.
"""


def test_markdown_entries_have_ids_titles_categories_and_text(tmp_path):
    passages = read_markdown(write(tmp_path / "kb.md", KB_MD))
    assert passages == [
        Passage("card-lost", "Lost card?", "Freeze the card in the app.\n\nThen order a new one.", "cards"),
        Passage("opening-hours", "Opening hours", "We answer from 8am to 8pm."),
    ]


def test_markdown_duplicate_id_names_both_lines(tmp_path):
    path = write(tmp_path / "kb.md", KB_MD + "\n## Card gone\nid: card-lost\n\nCall us.\n")
    with pytest.raises(
        KnowledgeBaseError, match=r"^kb\.md:16: duplicate id 'card-lost' \(first at line 5\)$"
    ):
        read_markdown(path)


def test_markdown_entry_without_text_names_its_line(tmp_path):
    path = write(tmp_path / "kb.md", "## First\nSome text.\n\n## Empty\nid: empty\n\n")
    with pytest.raises(KnowledgeBaseError, match=r"^kb\.md:4: entry 'Empty' has no text$"):
        read_markdown(path)


def test_markdown_heading_inside_a_code_fence_is_body_text(tmp_path):
    passages = read_markdown(write(tmp_path / "kb.md", "## Codes\n```\n## not an entry\n```\n"))
    assert [p.text for p in passages] == ["```\n## not an entry\n```"]


def test_csv_reads_question_answer_class_with_default_ids(tmp_path):
    path = write(
        tmp_path / "faq.csv", 'Question,Answer,Class\nHow?,"Like this, mostly.",cards\nWhen?,Now.,\n'
    )
    assert read_csv(path) == [
        Passage("faq-1", "How?", "Like this, mostly.", "cards"),
        Passage("faq-2", "When?", "Now."),
    ]


def test_csv_id_and_text_columns(tmp_path):
    path = write(tmp_path / "kb.csv", "id,title,text,category\nfee-1,Fees,No fees.,account\n")
    assert read_csv(path) == [Passage("fee-1", "Fees", "No fees.", "account")]


def test_csv_empty_answer_names_its_line_after_a_multiline_cell(tmp_path):
    path = write(tmp_path / "kb.csv", 'question,answer\nA,"two\nlines"\n\nB,  \n')
    with pytest.raises(KnowledgeBaseError, match=r"^kb\.csv:5: empty answer$"):
        read_csv(path)


def test_csv_without_a_text_column_names_the_columns_found(tmp_path):
    path = write(tmp_path / "kb.csv", "Question,Reply\nHow?,Thus.\n")
    with pytest.raises(KnowledgeBaseError, match=r"kb\.csv:1: no text column.*found: Question, Reply"):
        read_csv(path)


def test_exact_duplicates_are_dropped_and_counted(tmp_path, caplog):
    path = write(tmp_path / "kb.csv", "question,answer\nHow?,Thus.\nWhy?,So.\nHow?,Thus.\n")
    with caplog.at_level(logging.INFO, logger="apps.customer_service.knowledge_base"):
        passages = read_passages(path)
    assert [p.source_id for p in passages] == ["kb-1", "kb-2"]
    assert "dropped 1 exact duplicate" in caplog.text


def test_duplicate_id_across_sources_names_both_files(tmp_path):
    csv_path = write(tmp_path / "extra.csv", "id,answer\ncard-lost,Call us.\n")
    md_path = write(tmp_path / "kb.md", KB_MD)
    with pytest.raises(
        KnowledgeBaseError, match=r"^extra\.csv:2: duplicate id 'card-lost' \(first at kb\.md:5\)$"
    ):
        read_sources([md_path, csv_path])


def test_unknown_suffix_is_a_clear_error(tmp_path):
    with pytest.raises(KnowledgeBaseError, match=r"unknown knowledge-base format '\.txt'"):
        read_passages(write(tmp_path / "kb.txt", "text"))


def test_slugify():
    assert slugify("Lost or stolen card?") == "lost-or-stolen-card"


def test_demo_knowledge_base_reads_cleanly():
    passages = read_passages(DEMO_KB)
    assert 30 <= len(passages) <= 40
    assert {p.category for p in passages} == {"cards", "transfers", "account"}
    assert all(p.title and p.text for p in passages)
