"""Syntax checks for code assist: how many syntax errors a file has, and whether a text inserted at
a cursor adds errors to the file around it.

    syntax_errors("def f(:\\n", "python")                     # 1
    adds_errors = insertion_check(prefix=before, suffix=after, language="go")
    adds_errors("return x, nil")                            # True when the file gets worse

Python is parsed with the standard library's `ast` (exact, but it stops at the first error: a count
is 0 or 1); every other known language with tree-sitter, counting its ERROR and MISSING nodes.
Unknown languages have no check: both functions answer None. This module decides what "adds errors"
means; it does not edit completions (that is `postprocess.py`).

An insertion adds errors when the file with it has more errors than the file without it, or an
error that starts inside the inserted text (a tree-sitter ERROR node; for Python the first error,
e.g. "'(' was never closed" at a bracket the insertion opened). So a file that is already broken
while the user types is judged only on what the insertion changes.

Cost per insertion. Tree-sitter parses the file without the insertion once (3 to 4 ms for 1,000
lines of JavaScript), then reparses each insertion incrementally (under 1 ms when the insertion
keeps the file's structure). Two guards spare a broken insertion tree-sitter's error recovery over
the rest of the file (10 to 40 ms): in a file that parses, with the cursor outside comments and
strings, an insertion with more opening than closing brackets or the reverse (outside its own
one-line strings and comments) adds errors without a parse; and a reparse running past
`REPARSE_BUDGET` times the first parse is cancelled and counts as adding errors. NOTE: that budget
is wall time, so a badly overloaded machine can trim more.

Python parses only a region around the cursor, not the whole file (about 9 ms for 2,000 lines): from
the nearest statement above the cursor indented no deeper than the insertion to the next one below
it, wrapped in `if 1:` when indented; the region without the insertion is parsed only once an
insertion fails. A line inside a triple-quoted string, after a decorator or after a line ending in
a comma, backslash or opening bracket is not taken for a statement; a region cut wrongly only makes
the check lenient (its baseline fails to parse). A region longer than `MAX_REGION_LINES` (code after
a long class) starts at the cursor's line instead where that is safe (see `_starts_fresh`); where it
isn't (code dedented to column 0 inside a long class) it stays long, a few parses of that class.
"""

from __future__ import annotations

import ast
import re
import time
import warnings
from collections.abc import Callable

from tree_sitter import Node, Parser, Point, Tree

from apps.code_assist.languages import canonical, parser_for

InsertionCheck = Callable[[str], bool]  # inserted text -> whether it adds syntax errors
REPARSE_BUDGET = 2.0  # a reparse may take this many times the first parse, or
MIN_REPARSE_BUDGET_S = 0.005  # this long, before it counts as adding errors
MAX_REGION_LINES = 200  # a longer Python region starts at the cursor's line where that is safe
_STRING_OR_COMMENT = re.compile(
    r"""("|')(?:\\.|(?!\1)[^\\\n])*\1"""  # a one-line string
    r"|`(?:\\.|[^`\\])*`|//[^\n]*|/\*.*?\*/",  # a template string, a comment
    re.S,
)


def syntax_errors(code: str, language: str | None) -> int | None:
    """How many syntax errors `code` has (Python: 0 or 1), or None when no parser knows `language`."""
    if canonical(language) == "python":
        return int(_python_error(code) is not None)
    parser = parser_for(language)
    if parser is None:
        return None
    return len(_error_nodes(parser.parse(code.encode()).root_node))


def insertion_check(*, prefix: str, suffix: str, language: str | None) -> InsertionCheck | None:
    """A function telling whether a text inserted between `prefix` and `suffix` adds syntax errors
    (see the module docstring), or None when no parser knows `language`."""
    if canonical(language) == "python":
        return _PythonCheck(prefix=prefix, suffix=suffix)
    parser = parser_for(language)
    return _TreeSitterCheck(parser, prefix=prefix, suffix=suffix) if parser is not None else None


# --- tree-sitter -----------------------------------------------------------------------------------


class _TreeSitterCheck:
    def __init__(self, parser: Parser, *, prefix: str, suffix: str):
        self._parser = parser
        self._prefix, self._suffix = prefix.encode(), suffix.encode()
        started = time.perf_counter()
        self._tree: Tree = parser.parse(self._prefix + self._suffix)
        self._budget_s = max(REPARSE_BUDGET * (time.perf_counter() - started), MIN_REPARSE_BUDGET_S)
        self._errors = len(_error_nodes(self._tree.root_node))
        self._cursor = _point_after(Point(0, 0), self._prefix)
        self._in_text = _inside_comment_or_string(self._tree, len(self._prefix))

    def __call__(self, text: str) -> bool:
        if self._errors == 0 and not self._in_text and bracket_delta(text) != 0:
            return True  # a file that parses has an error somewhere once a bracket is added or lost
        inserted = text.encode()
        start, end = len(self._prefix), len(self._prefix) + len(inserted)
        tree = self._tree.copy()  # an edited tree tells the parser which parts it can reuse
        tree.edit(
            start_byte=start, old_end_byte=start, new_end_byte=end,
            start_point=self._cursor, old_end_point=self._cursor,
            new_end_point=_point_after(self._cursor, inserted),
        )  # fmt: skip
        try:
            errors = _error_nodes(self._reparse(self._prefix + inserted + self._suffix, tree).root_node)
        except ValueError:  # cancelled: error recovery ran that long only because the structure broke
            return True
        inside = any(start <= node.start_byte < end for node in errors if not node.is_missing)
        return inside or len(errors) > self._errors

    def _reparse(self, source: bytes, tree: Tree) -> Tree:
        """Parse `source` reusing the edited `tree`, cancelled (ValueError) past the budget."""
        view, deadline = memoryview(source), time.perf_counter() + self._budget_s
        return self._parser.parse(
            lambda offset, _: view[offset:], tree, progress_callback=lambda *_: time.perf_counter() > deadline
        )


def bracket_delta(text: str) -> int:
    """Opening minus closing brackets in `text`, outside one-line strings and C-style comments (a
    rough count: no language's lexer)."""
    code = _STRING_OR_COMMENT.sub("", text)
    return sum(map(code.count, "([{")) - sum(map(code.count, ")]}"))


def _inside_comment_or_string(tree: Tree, byte: int) -> bool:
    node = tree.root_node.descendant_for_byte_range(max(byte - 1, 0), byte)
    return node is not None and any(word in node.type for word in ("comment", "string", "char"))


def _error_nodes(root: Node) -> list[Node]:
    """ERROR and MISSING nodes, visiting only subtrees that contain one."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            found.append(node)
        stack.extend(child for child in node.children if child.has_error)
    return found


def _point_after(start: Point, text: bytes) -> Point:
    """Where `text` ends when it starts at `start` (tree-sitter columns count bytes)."""
    rows = text.count(b"\n")
    if rows == 0:
        return Point(start.row, start.column + len(text))
    return Point(start.row + rows, len(text) - text.rfind(b"\n") - 1)


# --- Python -------------------------------------------------------------------------------------------

_TRIPLE_QUOTE = re.compile("\"\"\"|'''")
_CONTINUATION_WORDS = {"else", "elif", "except", "finally", "case"}  # a clause, not a new statement


class _PythonCheck:
    def __init__(self, *, prefix: str, suffix: str):
        self._before = prefix.split("\n")  # the last one is the cursor's line up to the cursor
        self._after = suffix.split("\n")  # the first one is the rest of the cursor's line
        self._before_in_string, opener = _starts_in_string(self._before, opener=None)
        self._after_in_string, _ = _starts_in_string(self._after, opener=opener)
        self._regions: dict[tuple[int, bool], tuple[str, str]] = {}
        self._baselines: dict[tuple[int, bool], int | None] = {}  # region -> its first error

    def __call__(self, text: str) -> bool:
        if not text.strip():
            return False
        indent = _min_indent(self._before[-1] + text + self._after[0])
        word = re.match(r"\w+", text.lstrip())
        clause = word is not None and word.group() in _CONTINUATION_WORDS
        head, tail = self._region(indent, clause=clause)
        error = _python_error(head + text + tail)
        if error is None:
            return False
        if (indent, clause) not in self._baselines:  # parsed only when needed: regions can be long
            self._baselines[indent, clause] = _python_error(head + tail)
        return self._baselines[indent, clause] is None or 0 <= error - len(head) < len(text)

    def _region(self, indent: int, *, clause: bool) -> tuple[str, str]:
        """The code before and after the cursor that an insertion indented `indent` (starting with
        a clause such as `else:` or not) is parsed in."""
        if (indent, clause) not in self._regions:
            cursor = len(self._before) - 1
            first = _region_start(self._before, self._before_in_string, indent=indent)
            if (
                (first is None or cursor - first > MAX_REGION_LINES)
                and not clause
                and self._starts_fresh(indent)
            ):
                first = cursor  # a new statement here can't change how the long code above it parses
            if first is None:
                first, depth = 0, 0  # no statement above: the whole prefix
            else:
                depth = indent if first == cursor else _indent(self._before[first])
            previous = _code_line_before(self._before, cursor)
            if self._before[-1].strip():  # the cursor's line itself
                previous = self._before[-1] + self._after[0]
            last = _region_end(self._after, self._after_in_string, depth=depth, previous=previous)
            head = ("if 1:\n" if depth else "") + "\n".join(self._before[first:])
            tail = "\n".join(self._after[:last])
            self._regions[indent, clause] = (head, tail)
        return self._regions[indent, clause]

    def _starts_fresh(self, indent: int) -> bool:
        """Whether a statement indented `indent` may begin on the cursor's line whatever the code
        above: the line is blank around the cursor, the code line above ends a statement (not with
        `:`, a comma, a backslash or an opening bracket, nor a decorator), `indent` is its
        indentation or 0, and the code line below is indented no deeper."""
        cursor = len(self._before) - 1
        if (self._before[cursor] + self._after[0]).strip() or self._before_in_string[cursor]:
            return False
        above = _code_line_before(self._before, cursor)
        below = next((line for line in self._after[1:] if not _is_blank_or_comment(line)), "")
        ends_open = above.rstrip().endswith((":", ",", "\\", "(", "[", "{")) or above.lstrip().startswith("@")
        return bool(above) and not ends_open and indent in (0, _indent(above)) and _indent(below) <= indent


def _region_start(lines: list[str], in_string: list[bool], *, indent: int) -> int | None:
    """The nearest line above the cursor's (the last one) that starts a statement indented no deeper
    than `indent` and than every code line between it and the cursor; None when there is none."""
    lowest = indent
    for i in range(len(lines) - 2, -1, -1):
        if in_string[i] or _is_blank_or_comment(lines[i]):
            continue
        depth = _indent(lines[i])
        if depth <= lowest and _starts_statement(lines[i], previous=_code_line_before(lines, i)):
            return i
        lowest = min(lowest, depth)
    return None


def _region_end(lines: list[str], in_string: list[bool], *, depth: int, previous: str) -> int:
    """The first line after the cursor's (the first one) that leaves a region whose first line is
    indented `depth`: a code line indented less, or as much and starting a statement. `previous` is
    the last code line before it."""
    for i in range(1, len(lines)):
        if in_string[i] or _is_blank_or_comment(lines[i]):
            continue
        line_depth = _indent(lines[i])
        if line_depth < depth or (line_depth == depth and _starts_statement(lines[i], previous=previous)):
            return i
        previous = lines[i]
    return len(lines)


def _starts_statement(line: str, *, previous: str) -> bool:
    """Whether `line` begins a statement rather than continuing one (`previous`: the code line
    before it): not after a decorator or a line ending in a backslash, comma or opening bracket
    (black's style of continuing a bracket), not a closing bracket, `.method()` or clause."""
    stripped, previous = line.lstrip(), previous.rstrip()
    if (
        previous.endswith(("\\", ",", "(", "[", "{"))
        or previous.lstrip().startswith("@")
        or stripped[0] in ")]}."
    ):
        return False
    word = re.match(r"\w+", stripped)
    return word is None or word.group() not in _CONTINUATION_WORDS


def _code_line_before(lines: list[str], index: int) -> str:
    for line in reversed(lines[max(index - 8, 0) : index]):  # a few lines: blank runs are short
        if not _is_blank_or_comment(line):
            return line
    return ""


def _starts_in_string(lines: list[str], *, opener: str | None) -> tuple[list[bool], str | None]:
    """For each line, whether it starts inside a triple-quoted string (approximate: quotes inside
    one-line strings and comments count too), and the string open after the last line."""
    flags = []
    for line in lines:
        flags.append(opener is not None)
        if '"""' in line or "'''" in line:
            for quote in _TRIPLE_QUOTE.findall(line):
                opener = quote if opener is None else (None if quote == opener else opener)
    return flags, opener


def _python_error(code: str) -> int | None:
    """The character offset of the first syntax error in `code`, or None when it parses."""
    try:
        with warnings.catch_warnings():  # e.g. invalid escape sequences: not our concern here
            warnings.simplefilter("ignore")
            ast.parse(code)
    except SyntaxError as error:
        return _offset(code, line=error.lineno or 1, column=error.offset or 1)
    except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
        return 0
    return None


def _offset(code: str, *, line: int, column: int) -> int:
    """Character offset of a 1-based line and column, clamped to the code."""
    start = 0
    for _ in range(line - 1):
        start = code.find("\n", start) + 1
        if start == 0:
            return len(code)
    return min(start + max(column - 1, 0), len(code))


def _min_indent(text: str) -> int:
    return min((_indent(line) for line in text.split("\n") if line.strip()), default=0)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")
