"""`verticals code index` and `verticals code eval`: a repository in, an index the server loads;
a benchmark slice in, a report the API lists; bad input named.

.venv/bin/python -m pytest tests/apps/code_assist/test_commands.py -q
"""

from __future__ import annotations

import json

from apps.cli import main
from apps.code_assist.repository_index import RepositoryIndex
from tests.apps.code_assist.conftest import write_repository


def test_index_writes_an_index_that_finds_the_repositorys_symbols(tmp_path, capsys):
    repository = write_repository(tmp_path / "repo")
    assert main(["code", "index", str(repository), "--out", str(tmp_path / "index")]) == 0
    assert "indexed 3 chunks of 2 files" in capsys.readouterr().out
    [hit] = RepositoryIndex.load(tmp_path / "index").search("to_cents amount rounded", k=1)
    assert (hit.filepath, hit.symbol) == ("shop/money.py", "to_cents")


def test_index_of_a_missing_folder_is_an_error_naming_it(tmp_path, capsys):
    assert main(["code", "index", str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a folder" in capsys.readouterr().err


def test_eval_writes_a_report_with_pass_at_1(tmp_path, capsys):
    code = main(
        ["code", "eval", "humaneval", "--limit", "2", "--max-tokens", "8", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert "pass@1" in capsys.readouterr().out
    [report] = [json.loads(path.read_text()) for path in tmp_path.glob("humaneval-embedded*.json")]
    assert len(report["problems"]) == 2 and 0 <= report["pass@1"] <= 1
    assert report["settings"]["model"] == "embedded"
