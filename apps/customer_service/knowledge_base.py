"""The FAQ knowledge base as text: `Passage`s read from Markdown or CSV files, checked and deduplicated.

    passages = read_passages(DEMO_KB)                        # one file, .md/.markdown/.csv
    passages = read_sources([DEMO_KB, Path("extra.csv")])     # several, ids unique across them

Markdown: a `# ` heading names the knowledge base (it and any text before the first entry are
ignored); each entry is a `## Title` followed by its body. The body may open with `id: some-id`
and `category: cards` lines; without an id, the id is a slug of the title.

CSV: a header row is required; the text column is `answer` or `text`, the title column
`question` or `title`, the optional id column `id` (default `<file stem>-<row number>`), and the
category `category` or `class` (column names are matched case-insensitively).

A problem is a `KnowledgeBaseError` (a ValueError) that names the file and line: `kb.csv:7: empty
answer`. Ids must be unique within and across files; an entry whose (title, text) repeats an
earlier one exactly is dropped and the count is logged.

This module only reads text. It knows nothing of embeddings or indexes (see `retrieval.py`).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_KB = Path(__file__).resolve().parent / "data" / "demo_kb.md"

MARKDOWN_SUFFIXES = (".md", ".markdown")
CSV_SUFFIXES = (".csv",)
TEXT_COLUMNS = ("answer", "text")
TITLE_COLUMNS = ("question", "title")
CATEGORY_COLUMNS = ("category", "class")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_META_LINE = re.compile(r"^(id|category):\s*(.*)$", re.IGNORECASE)


class KnowledgeBaseError(ValueError):
    """A knowledge-base file or index that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class Passage:
    source_id: str
    title: str
    text: str
    category: str = ""


@dataclass(frozen=True)
class _Located:
    """A passage and where it was read, kept only while checking ids and duplicates."""

    passage: Passage
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def slugify(title: str) -> str:
    """`"Lost or stolen card?"` -> `"lost-or-stolen-card"`."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


# ----------------------------------------------------------------------------- markdown


def _markdown_entries(lines: list[str]) -> Iterable[tuple[int, str, list[tuple[int, str]]]]:
    """(heading line number, title, [(line number, body line)]) per `## ` entry; fenced code is body."""
    heading: tuple[int, str] | None = None
    body: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            if heading is not None:
                yield heading[0], heading[1], body
            heading, body = (number, line[3:].strip()), []
        elif heading is not None:
            body.append((number, line.rstrip()))
    if heading is not None:
        yield heading[0], heading[1], body


def _body_text(body: list[tuple[int, str]]) -> str:
    """Lines as written, runs of blank lines collapsed to one, outer blank lines dropped."""
    text = "\n".join(line for _, line in body)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def _markdown_passage(*, name: str, number: int, title: str, body: list[tuple[int, str]]) -> Passage:
    if not title:
        raise KnowledgeBaseError(f"{name}:{number}: entry heading '## ' has no title")
    meta: dict[str, str] = {}
    while body and (not body[0][1].strip() or _META_LINE.match(body[0][1].strip())):
        line_number, line = body.pop(0)
        if match := _META_LINE.match(line.strip()):
            key, value = match.group(1).lower(), match.group(2).strip()
            if key in meta:
                raise KnowledgeBaseError(f"{name}:{line_number}: second '{key}:' line in entry {title!r}")
            meta[key] = value
    source_id = meta.get("id", slugify(title))
    _check_id(source_id, where=f"{name}:{number}", title=title)
    text = _body_text(body)
    if not text:
        raise KnowledgeBaseError(f"{name}:{number}: entry {title!r} has no text")
    return Passage(source_id=source_id, title=title, text=text, category=meta.get("category", ""))


def _read_markdown(path: Path) -> list[_Located]:
    lines = _read_text(path).splitlines()
    located = [
        _Located(_markdown_passage(name=path.name, number=number, title=title, body=body), path.name, number)
        for number, title, body in _markdown_entries(lines)
    ]
    if not located:
        raise KnowledgeBaseError(f"{path.name}: no '## Title' entries found")
    return located


def read_markdown(path: str | Path) -> list[Passage]:
    """The `## Title` entries of one Markdown file, checked and deduplicated (see the module doc)."""
    path = Path(path)
    return _checked(_read_markdown(path), name=path.name)


# ----------------------------------------------------------------------------- csv


@dataclass(frozen=True)
class _CsvColumns:
    """The header cells (as written) that hold each field; None where the file has no such column."""

    header: list[str]
    text: str
    title: str | None
    id: str | None
    category: str | None


def _csv_columns(header: list[str], *, name: str) -> _CsvColumns:
    if not header:
        raise KnowledgeBaseError(f"{name}:1: empty file; a header row is required")
    by_lower = {cell.lower(): cell for cell in header}
    pick = lambda names: next((by_lower[n] for n in names if n in by_lower), None)
    text = pick(TEXT_COLUMNS)
    if text is None:
        raise KnowledgeBaseError(
            f"{name}:1: no text column; expected one of {', '.join(TEXT_COLUMNS)} "
            f"in the header, found: {', '.join(header)}"
        )
    return _CsvColumns(header, text, pick(TITLE_COLUMNS), pick(("id",)), pick(CATEGORY_COLUMNS))


def _csv_passage(row: dict, *, columns: _CsvColumns, default_id: str, where: str) -> Passage:
    if None in row:
        raise KnowledgeBaseError(f"{where}: more cells than the {len(columns.header)} header columns")
    cell = lambda column: (row.get(column) or "").strip() if column else ""
    text = cell(columns.text)
    if not text:
        raise KnowledgeBaseError(f"{where}: empty {columns.text.lower()}")
    title = cell(columns.title)
    source_id = cell(columns.id) or default_id
    _check_id(source_id, where=where, title=title)
    return Passage(source_id=source_id, title=title, text=text, category=cell(columns.category))


def _read_csv(path: Path) -> list[_Located]:
    lines = _read_text(path).splitlines(keepends=True)
    reader = csv.DictReader(lines)
    header = [cell.strip() for cell in reader.fieldnames or []]
    columns = _csv_columns(header, name=path.name)
    reader.fieldnames = header
    located, end_of_last_row = [], reader.line_num
    for row_number, row in enumerate(reader, start=1):
        # The row starts at the first non-blank line after the previous one (cells may span lines).
        rows_lines = range(end_of_last_row + 1, reader.line_num + 1)
        line = next((n for n in rows_lines if lines[n - 1].strip()), end_of_last_row + 1)
        end_of_last_row = reader.line_num
        passage = _csv_passage(
            row, columns=columns, default_id=f"{path.stem}-{row_number}", where=f"{path.name}:{line}"
        )
        located.append(_Located(passage, path.name, line))
    if not located:
        raise KnowledgeBaseError(f"{path.name}: a header but no rows")
    return located


def read_csv(path: str | Path) -> list[Passage]:
    """The rows of one CSV file with a header, checked and deduplicated (see the module doc)."""
    path = Path(path)
    return _checked(_read_csv(path), name=path.name)


# ----------------------------------------------------------------------------- any source


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except FileNotFoundError:
        raise KnowledgeBaseError(f"{path}: no such knowledge-base file") from None
    except UnicodeDecodeError as error:
        reason = f"{error.reason} at byte {error.start}"
        raise KnowledgeBaseError(f"{path.name}: not UTF-8 text ({reason})") from None


def _check_id(source_id: str, *, where: str, title: str) -> None:
    if not ID_PATTERN.match(source_id):
        raise KnowledgeBaseError(
            f"{where}: bad id {source_id!r} for {title!r}; use letters, digits, '.', '_' and '-'"
        )


def _checked(located: list[_Located], *, name: str) -> list[Passage]:
    """Passages with exact (title, text) repeats dropped; a reused id is an error naming both places."""
    first_by_id: dict[str, _Located] = {}
    seen_content: set[tuple[str, str]] = set()
    passages = []
    for entry in located:
        passage = entry.passage
        if (passage.title, passage.text) in seen_content:
            continue
        if (first := first_by_id.get(passage.source_id)) is not None:
            first_place = f"line {first.line}" if first.file == entry.file else first.where
            raise KnowledgeBaseError(
                f"{entry.where}: duplicate id {passage.source_id!r} (first at {first_place})"
            )
        first_by_id[passage.source_id] = entry
        seen_content.add((passage.title, passage.text))
        passages.append(passage)
    if dropped := len(located) - len(passages):
        log.info("%s: dropped %d exact duplicate entries (same title and text)", name, dropped)
    return passages


def _read_located(path: Path) -> list[_Located]:
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return _read_markdown(path)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    raise KnowledgeBaseError(
        f"{path}: unknown knowledge-base format {path.suffix!r}; "
        f"use one of {', '.join(MARKDOWN_SUFFIXES + CSV_SUFFIXES)}"
    )


def read_passages(path: str | Path) -> list[Passage]:
    """One Markdown or CSV file, chosen by its suffix."""
    path = Path(path)
    return _checked(_read_located(path), name=path.name)


def read_sources(paths: Iterable[str | Path]) -> list[Passage]:
    """Every passage of several files, in order; ids must be unique across all of them."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise KnowledgeBaseError("no knowledge-base files given")
    located = [entry for path in paths for entry in _read_located(path)]
    return _checked(located, name=", ".join(p.name for p in paths))
