"""`verticals cs kb import`: files in, an index that the server loads out; bad files named.

.venv/bin/python -m pytest tests/apps/customer_service/test_commands.py -q
"""

import json

import pytest

from apps.cli import main
from apps.customer_service.retrieval import KnowledgeBase, MiniLMEmbeddings


def test_kb_import_indexes_markdown_and_csv_together(tmp_path, capsys):
    (tmp_path / "policies.md").write_text(
        "# Policies\n\n## Branch hours\nid: hours\nOpen 9 to 5 on weekdays.\n"
    )
    (tmp_path / "faq.csv").write_text(
        "question,answer,id\nDo you charge for SEPA?,SEPA transfers are free.,sepa\n"
    )
    index = tmp_path / "index"
    code = main(
        [
            "cs",
            "kb",
            "import",
            str(tmp_path / "policies.md"),
            str(tmp_path / "faq.csv"),
            "--index-dir",
            str(index),
        ]
    )
    assert code == 0
    assert "indexed 2 passages from 2 file(s)" in capsys.readouterr().out
    knowledge_base = KnowledgeBase.load(index, MiniLMEmbeddings())
    assert knowledge_base.search("are SEPA payments free", k=1)[0].passage.source_id == "sepa"


def test_kb_import_names_the_file_and_line_of_a_bad_entry(tmp_path, capsys):
    (tmp_path / "faq.csv").write_text("question,answer\nWhat is IBAN?,An account number.\nEmpty?,\n")
    code = main(["cs", "kb", "import", str(tmp_path / "faq.csv"), "--index-dir", str(tmp_path / "index")])
    assert code == 2
    assert "faq.csv:3" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


@pytest.mark.slow
def test_cs_train_intents_writes_a_calibrated_adapter_that_names_its_base(tmp_path, capsys):
    out = tmp_path / "intents"
    assert main(["cs", "train", "intents", "--out", str(out), "--epochs", "1", "--limit", "64"]) == 0
    assert "intents adapter written to" in capsys.readouterr().out
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "embedded"
    calibration = json.loads((out / "calibration.json").read_text())
    assert 0 <= calibration["threshold"] <= 1 and calibration["data"] == "banking77 train"
    assert len(json.loads((out / "labels.json").read_text())) == 77
