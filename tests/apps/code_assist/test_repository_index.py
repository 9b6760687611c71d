"""The repository index: which files it reads, BM25 on code terms, the snippets it picks for a
cursor, and the index on disk, on a tiny repository written per module.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/code_assist/test_repository_index.py -q
"""

import json
import re
from collections import Counter

import numpy as np
import pytest

from apps.code_assist.repository_index import (
    CHUNKS_FILE,
    MANIFEST_FILE,
    Bm25,
    RepositoryIndex,
    RepositoryIndexError,
    Snippet,
    bm25_reference_scores,
    code_terms,
    fit_budget,
)

FILES = {
    "pkg/config.py": '''\
"""Reading settings."""


class ConfigError(ValueError):
    pass


def parse_config(path):
    """The settings in a TOML file."""
    with open(path) as file:
        return load_toml(file.read())
''',
    "pkg/server.py": """\
from pkg.config import parse_config


def serve(path):
    settings = parse_config(path)
    return settings
""",
    "pkg/broken.py": "def half_written(:\n    retry_budget = 3\n",
    "web/cart.js": "export function addItem(cart, item) {\n  cart.items.push(item);\n}\n",
    "web/shapes.ts": "export interface Shape {\n  area(): number;\n}\n",
    "cmd/server.go": "package main\n\nfunc (s *Server) Start() error {\n\treturn nil\n}\n",
    "src/Greeter.java": "public class Greeter {\n  String greet(String name) { return name; }\n}\n",
    "README.md": "parse_config reads settings\n",
    "node_modules/left-pad/index.js": "function parseConfig() {}\n",
    ".venv/lib/site.py": "def parse_config(): pass\n",
    "env/pyvenv.cfg": "home = /usr/bin\n",
    "env/lib/other.py": "def parse_config(): pass\n",
    "build/lib/pkg/config.py": "def parse_config(): pass\n",
}
INDEXED = {"pkg/config.py", "pkg/server.py", "pkg/broken.py", "web/cart.js", "web/shapes.ts", "cmd/server.go"}
INDEXED |= {"src/Greeter.java"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "pkg/blob.py").write_bytes(b"def x():\0\0\0 pass\n")  # binary, with a source extension
    return root


@pytest.fixture(scope="module")
def index(repo):
    return RepositoryIndex.build(repo, progress=False)


def test_code_terms_split_camel_case_and_acronyms():
    assert code_terms("parseHTTPResponse") == ["parsehttpresponse", "parse", "http", "response"]


def test_code_terms_split_snake_case():
    assert code_terms("max_new_tokens") == ["max_new_tokens", "max", "new", "tokens"]


def test_code_terms_drop_keywords_numbers_and_punctuation():
    assert code_terms("def load(self): return x + 42 # the end") == ["load", "end"]


def test_build_reads_source_files_only_outside_dependencies_venvs_builds_and_binaries(index):
    assert {chunk.filepath for chunk in index.chunks} == INDEXED
    assert index.files == len(INDEXED)


def test_a_file_with_a_syntax_error_is_still_indexed(index):
    assert index.search("retry_budget", k=1)[0].filepath == "pkg/broken.py"


def test_search_finds_the_definition_of_the_symbol_at_the_cursor(index):
    prefix = "from pkg.config import parse_config\n\ndef reload(path):\n    return parse_config("
    best = index.relevant_snippets(prefix=prefix, filepath="pkg/app.py")[0]
    assert (best.filepath, best.symbol, best.start_line) == ("pkg/config.py", "parse_config", 8)


def test_the_current_file_is_left_out(index):
    hits = index.relevant_snippets(prefix="settings = parse_config(path)", filepath="pkg/config.py")
    assert hits and all(hit.filepath != "pkg/config.py" for hit in hits)


def test_an_absolute_path_under_the_root_is_left_out_too(index, repo):
    hits = index.search("parse_config", k=10, exclude_filepath=str(repo / "pkg/config.py"))
    assert all(hit.filepath != "pkg/config.py" for hit in hits)


def test_the_language_keeps_snippets_of_its_family(index):
    query = "addItem cart Shape area Start Greeter parse_config"
    hits = index.search(query, k=10, language="typescriptreact")
    assert {hit.filepath for hit in hits} == {"web/cart.js", "web/shapes.ts"}


def test_relevant_snippets_fit_the_budget(index):
    hits = index.relevant_snippets(prefix="parse_config settings serve ConfigError", budget_chars=120)
    assert hits and sum(len(hit.body) for hit in hits) <= 120


def test_fit_budget_skips_a_snippet_too_long_for_the_next_and_drops_repeats():
    snippets = [Snippet("a", "x" * 50, 3.0, 1, None), Snippet("b", "y" * 200, 2.0, 1, None)]
    snippets += [Snippet("c", "x" * 50, 1.5, 1, None), Snippet("d", "z" * 30, 1.0, 1, None)]
    assert [s.filepath for s in fit_budget(snippets, budget_chars=100, k=4)] == ["a", "d"]


def test_fast_bm25_agrees_with_the_reference_loop():
    documents = [code_terms(text) for text in FILES.values()]
    query = code_terms("parse_config(path) settings parse area cart cart")
    fast = Bm25([Counter(terms) for terms in documents]).scores(query)
    np.testing.assert_allclose(fast, bm25_reference_scores(documents, query), rtol=1e-12, atol=1e-12)


def test_save_and_load_give_the_same_search_results(index, tmp_path):
    loaded = RepositoryIndex.load(index.save(tmp_path / "index"))
    query = "settings = parse_config(path)"
    assert loaded.search(query, k=5) == index.search(query, k=5)
    assert (loaded.root, loaded.files, len(loaded)) == (index.root, index.files, len(index))


def test_an_empty_repository_is_a_value_error_naming_the_path(tmp_path):
    (tmp_path / "notes.txt").write_text("no code here")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        RepositoryIndex.build(tmp_path, progress=False)


def test_loading_a_missing_index_names_the_manifest(tmp_path):
    with pytest.raises(RepositoryIndexError, match=MANIFEST_FILE):
        RepositoryIndex.load(tmp_path / "nowhere")


def test_loading_corrupt_chunks_names_the_file(index, tmp_path):
    directory = index.save(tmp_path / "index")
    (directory / CHUNKS_FILE).write_text(json.dumps([{"filepath": "a.py"}]))
    with pytest.raises(RepositoryIndexError, match=CHUNKS_FILE):
        RepositoryIndex.load(directory)
