"""The languages code assist knows: their editor identifiers, file extensions, line-comment
prefix and, for all but Python, a tree-sitter grammar from PyPI.

    language_for_path("src/app.ts")     # "typescript"
    canonical("javascriptreact")        # "javascript" (VS Code's identifiers are accepted)
    parser_for("go").parse(b"package main")

Python is parsed with the standard library's `ast` (exact, and the reference for Python); every
other language with tree-sitter. Unknown languages are not an error: callers skip the syntax
check and chunk such files by lines.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import PurePath

from tree_sitter import Language, Parser


@dataclass(frozen=True)
class LanguageSpec:
    name: str  # VS Code's language identifier
    extensions: tuple[str, ...]
    line_comment: str
    grammar: str | None  # "module:function" returning the tree-sitter language; None for Python


LANGUAGES: dict[str, LanguageSpec] = {
    spec.name: spec
    for spec in (
        LanguageSpec("python", (".py", ".pyi"), "#", None),
        LanguageSpec("javascript", (".js", ".mjs", ".cjs", ".jsx"), "//", "tree_sitter_javascript:language"),
        LanguageSpec(
            "typescript", (".ts", ".mts", ".cts"), "//", "tree_sitter_typescript:language_typescript"
        ),
        LanguageSpec("typescriptreact", (".tsx",), "//", "tree_sitter_typescript:language_tsx"),
        LanguageSpec("java", (".java",), "//", "tree_sitter_java:language"),
        LanguageSpec("go", (".go",), "//", "tree_sitter_go:language"),
        LanguageSpec(
            "cpp", (".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".h"), "//", "tree_sitter_cpp:language"
        ),
    )
}
# Editor identifiers that share a grammar with one above.
ALIASES = {
    "javascriptreact": "javascript",
    "c": "cpp",
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
}
_BY_EXTENSION = {ext: spec.name for spec in LANGUAGES.values() for ext in spec.extensions}


def canonical(language: str | None) -> str | None:
    """The known language for an editor's identifier (case-insensitive), or None."""
    if not language:
        return None
    name = ALIASES.get(language.lower(), language.lower())
    return name if name in LANGUAGES else None


def language_for_path(path: str | PurePath) -> str | None:
    """The language of a file by its extension, or None."""
    return _BY_EXTENSION.get(PurePath(path).suffix.lower())


def line_comment(language: str | None) -> str:
    """The line-comment prefix of `language` ("#" when unknown: the most common one in scripts)."""
    name = canonical(language)
    return LANGUAGES[name].line_comment if name else "#"


def parser_for(language: str | None) -> Parser | None:
    """A new tree-sitter parser for `language` (parsers hold state: one per thread), or None for
    Python and unknown languages."""
    grammar = _grammar(canonical(language))
    return Parser(grammar) if grammar is not None else None


@functools.cache
def _grammar(name: str | None) -> Language | None:
    if name is None or LANGUAGES[name].grammar is None:
        return None
    module_name, function = LANGUAGES[name].grammar.split(":")
    return Language(getattr(importlib.import_module(module_name), function)())
