"""Source files cut into chunks a retriever can index: whole functions, classes and methods, with
the module-level code between them in chunks of its own.

    chunks = chunk_source(text, filepath="pkg/app.py", language="python")
    chunks[0]  # Chunk(filepath="pkg/app.py", symbol="Server.start", kind="method", start_line=12, ...)

Python is parsed with the standard library's `ast`; the other known languages with tree-sitter
(`languages.parser_for`), picking definitions by node type per language. Decorators, annotations
and the comments directly above a definition belong to it. A class longer than `SPLIT_CLASS_LINES`
is cut into its methods ("Class.method") plus "class" chunks holding the rest of its body (the
header: class line, docstring, attributes). Lines no definition covers become "module" chunks.
Unknown languages, and Python that does not parse, are cut into windows of `WINDOW_LINES` lines.
Every chunk is capped at `MAX_CHUNK_LINES` lines and `MAX_CHUNK_CHARS` characters: a longer
definition is cut into windows that keep its symbol and kind.

Kinds: "function", "class" (any type declaration: class, interface, struct, enum, type alias),
"method" (a function inside, or qualified by, a type) and "module" (everything else).

This module only cuts text. It does not walk directories, tokenise or rank (see
`repository_index.py`), and it never fails on bad syntax: a broken file is still chunked.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from tree_sitter import Node

from apps.code_assist.languages import canonical, parser_for

SPLIT_CLASS_LINES = 60  # a class longer than this is cut into its methods
WINDOW_LINES = 40  # lines per chunk where there is no syntax to follow
MAX_CHUNK_LINES = 120
MAX_CHUNK_CHARS = 4000
KINDS = ("function", "class", "method", "module")


@dataclass(frozen=True)
class Chunk:
    filepath: str  # relative to the repository root, POSIX separators
    language: str | None
    symbol: str | None  # "Class.method", "function", "Class"; None for module-level code
    kind: str  # one of KINDS
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    body: str


@dataclass(frozen=True)
class _Span:
    """A run of lines that becomes one chunk (or several windows, past the caps)."""

    start: int  # 1-based, inclusive
    end: int
    symbol: str | None
    kind: str


def chunk_source(text: str, *, filepath: str, language: str | None) -> list[Chunk]:
    """The chunks of one file, in line order; none for a blank file."""
    # NOTE: not str.splitlines(): it also breaks at form feeds and U+2028, which neither `ast` nor
    # tree-sitter counts as line ends, and every line number after one would be off.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    language = canonical(language)
    spans = _spans(text, lines=lines, language=language)
    chunks = []
    for span in spans:
        for start, end in _windows(lines, start=span.start, end=span.end):
            body = "\n".join(lines[start - 1 : end])[:MAX_CHUNK_CHARS]
            chunks.append(Chunk(filepath, language, span.symbol, span.kind, start, end, body))
    return chunks


def _spans(text: str, *, lines: list[str], language: str | None) -> list[_Span]:
    if not lines:
        return []
    if language == "python":
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):  # ValueError: NUL bytes in the source
            return _line_windows(lines)
        return _python_spans(tree.body, lines=lines)
    parser = parser_for(language)
    if parser is None or language not in GRAMMARS:
        return _line_windows(lines)
    root = parser.parse(text.encode("utf-8", errors="replace")).root_node
    return _tree_sitter_spans(root, lines=lines, grammar=GRAMMARS[language])


def _line_windows(lines: list[str]) -> list[_Span]:
    return [
        _Span(start, min(start + WINDOW_LINES - 1, len(lines)), None, "module")
        for start in range(1, len(lines) + 1, WINDOW_LINES)
        if _has_code(lines[start - 1 : start - 1 + WINDOW_LINES])
    ]


def _windows(lines: list[str], *, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, end) line ranges covering start..end, each within both caps (a single line longer
    than MAX_CHUNK_CHARS makes a window of its own, cut by the caller)."""
    window_start, chars = start, 0
    for number in range(start, end + 1):
        width = len(lines[number - 1]) + 1
        full = number - window_start >= MAX_CHUNK_LINES or chars + width > MAX_CHUNK_CHARS
        if full and number > window_start:
            yield window_start, number - 1
            window_start, chars = number, 0
        chars += width
    yield window_start, end


# ----------------------------------------------------------------------------- assembling spans


def _assemble(
    definitions: list[_Span],
    *,
    lines: list[str],
    start: int,
    end: int,
    symbol: str | None,
    kind: str,
    comment: re.Pattern[str],
) -> list[_Span]:
    """`definitions` (sorted, inside start..end) with the `comment` lines directly above each
    pulled in, and the lines between them as spans of `symbol` and `kind` (dropped when they hold
    no code, such as a closing brace)."""
    spans, cursor = [], start
    for definition in definitions:
        if definition.end < cursor:  # a second definition on the line the previous one ends on
            continue
        first = max(cursor, _comments_above(lines, line=definition.start, floor=cursor, comment=comment))
        if _has_code(lines[cursor - 1 : first - 1]):
            spans.append(_trimmed(lines, start=cursor, end=first - 1, symbol=symbol, kind=kind))
        spans.append(_Span(first, definition.end, definition.symbol, definition.kind))
        cursor = definition.end + 1
    if _has_code(lines[cursor - 1 : end]):
        spans.append(_trimmed(lines, start=cursor, end=end, symbol=symbol, kind=kind))
    return spans


def _comments_above(lines: list[str], *, line: int, floor: int, comment: re.Pattern[str]) -> int:
    """The first line of the comment block directly above `line` (no blank line between), not
    above `floor`."""
    while line - 1 >= floor and comment.match(lines[line - 2]):
        line -= 1
    return line


_PYTHON_COMMENT = re.compile(r"\s*#")
_C_COMMENT = re.compile(r"\s*(//|/\*|\*)")  # `*` and `*/`: the inside and end of a /** block */


def _has_code(lines: list[str]) -> bool:
    return any(re.search(r"\w", line) for line in lines)


def _trimmed(lines: list[str], *, start: int, end: int, symbol: str | None, kind: str) -> _Span:
    """start..end without its leading and trailing blank lines (the caller checked it has code)."""
    while not lines[start - 1].strip():
        start += 1
    while not lines[end - 1].strip():
        end -= 1
    return _Span(start, end, symbol, kind)


# ----------------------------------------------------------------------------- Python (ast)


def _python_spans(body: list[ast.stmt], *, lines: list[str]) -> list[_Span]:
    definitions: list[_Span] = []
    for node in body:
        if isinstance(node, ast.ClassDef) and _python_extent(node)[1] - node.lineno >= SPLIT_CLASS_LINES:
            definitions.extend(_python_class_parts(node, lines=lines))
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            definitions.append(_Span(*_python_extent(node), node.name, kind))
    return _assemble(
        definitions, lines=lines, start=1, end=len(lines), symbol=None, kind="module", comment=_PYTHON_COMMENT
    )


def _python_class_parts(node: ast.ClassDef, *, lines: list[str]) -> list[_Span]:
    """A long class as its methods plus "class" spans for the rest of its body."""
    start, end = _python_extent(node)
    methods = [
        _Span(*_python_extent(child), f"{node.name}.{child.name}", "method")
        for child in node.body
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    return _assemble(
        methods, lines=lines, start=start, end=end, symbol=node.name, kind="class", comment=_PYTHON_COMMENT
    )


def _python_extent(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """First line (decorators included) and last line of a definition."""
    first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    return first, node.end_lineno or node.lineno


# ----------------------------------------------------------------------------- tree-sitter


@dataclass(frozen=True)
class Grammar:
    """Which tree-sitter node types are definitions in one language."""

    functions: frozenset[str]  # functions (methods too, when qualified: Go receivers, C++ Foo::bar)
    types: frozenset[str]  # classes, interfaces, structs, enums: cut into members when long
    members: frozenset[str]  # the methods (and nested types) inside a type's body
    wrappers: frozenset[str] = frozenset()  # `export ...`, `template <...> ...`: the chunk spans them
    scopes: frozenset[str] = frozenset()  # namespaces, header guards: walked like the top level
    bindings: frozenset[str] = frozenset()  # `const f = () => ...` declarations of functions


_JS_FUNCTIONS = frozenset({"function_declaration", "generator_function_declaration"})
_JS_BINDINGS = frozenset({"lexical_declaration", "variable_declaration"})
_TS = Grammar(
    functions=_JS_FUNCTIONS,
    types=frozenset(
        {
            "class_declaration",
            "abstract_class_declaration",
            "interface_declaration",
            "enum_declaration",
            "type_alias_declaration",
        }
    ),
    members=frozenset({"method_definition", "abstract_method_signature"}),
    wrappers=frozenset({"export_statement"}),
    bindings=_JS_BINDINGS,
)
GRAMMARS: dict[str, Grammar] = {
    "javascript": Grammar(
        functions=_JS_FUNCTIONS,
        types=frozenset({"class_declaration"}),
        members=frozenset({"method_definition"}),
        wrappers=frozenset({"export_statement"}),
        bindings=_JS_BINDINGS,
    ),
    "typescript": _TS,
    "typescriptreact": _TS,
    "java": Grammar(
        functions=frozenset(),
        types=frozenset(
            {"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}
        ),
        members=frozenset(
            {
                "method_declaration",
                "constructor_declaration",
                "class_declaration",
                "interface_declaration",
                "enum_declaration",
                "record_declaration",
            }
        ),
    ),
    "go": Grammar(
        functions=frozenset({"function_declaration", "method_declaration"}),
        types=frozenset({"type_declaration"}),
        members=frozenset(),
    ),
    "cpp": Grammar(
        functions=frozenset({"function_definition"}),
        types=frozenset({"class_specifier", "struct_specifier", "enum_specifier", "union_specifier"}),
        members=frozenset({"function_definition"}),
        wrappers=frozenset({"template_declaration"}),
        scopes=frozenset(
            {"namespace_definition", "linkage_specification", "preproc_ifdef", "preproc_if", "preproc_else"}
        ),
    ),
}


def _tree_sitter_spans(root: Node, *, lines: list[str], grammar: Grammar) -> list[_Span]:
    definitions = sorted(_ts_definitions(root, grammar=grammar, lines=lines), key=lambda span: span.start)
    return _assemble(
        definitions, lines=lines, start=1, end=len(lines), symbol=None, kind="module", comment=_C_COMMENT
    )


def _ts_definitions(scope: Node, *, grammar: Grammar, lines: list[str]) -> Iterator[_Span]:
    body = scope.child_by_field_name("body") if scope.type in grammar.scopes else None
    for node in (body or scope).named_children:
        if node.type in grammar.scopes:
            yield from _ts_definitions(node, grammar=grammar, lines=lines)
            continue
        inner = _unwrapped(node, grammar=grammar)
        if inner is None or (name := _ts_name(inner, grammar=grammar)) is None:
            continue
        start, end = _ts_lines(node)
        if inner.type in grammar.types and end - start >= SPLIT_CLASS_LINES and grammar.members:
            yield from _ts_type_parts(node, inner=inner, name=name, grammar=grammar, lines=lines)
        elif inner.type in grammar.types:
            yield _Span(start, end, name, "class")
        else:
            yield _Span(start, end, name, "method" if "." in name else "function")


def _ts_type_parts(node: Node, *, inner: Node, name: str, grammar: Grammar, lines: list[str]) -> list[_Span]:
    """A long type as its members ("Type.member") plus "class" spans for the rest of its body."""
    members = []
    body = inner.child_by_field_name("body")
    for child in body.named_children if body is not None else ():
        member = _unwrapped(child, grammar=grammar, allowed=grammar.members)
        if member is not None and (member_name := _ts_name(member, grammar=grammar)) is not None:
            kind = "class" if member.type in grammar.types else "method"
            members.append(_Span(*_ts_lines(child), f"{name}.{member_name}", kind))
    start, end = _ts_lines(node)
    return _assemble(
        members, lines=lines, start=start, end=end, symbol=name, kind="class", comment=_C_COMMENT
    )


def _unwrapped(node: Node, *, grammar: Grammar, allowed: frozenset[str] | None = None) -> Node | None:
    """The definition `node` is or wraps (`export function f`), or None."""
    allowed = allowed if allowed is not None else grammar.functions | grammar.types | grammar.bindings
    if node.type in grammar.wrappers:
        inner = node.child_by_field_name("declaration")
        candidates = [inner] if inner is not None else node.named_children
        return next((child for child in candidates if child.type in allowed), None)
    return node if node.type in allowed else None


def _ts_name(node: Node, *, grammar: Grammar) -> str | None:
    """The name a definition declares ("Server.start" for a Go method or a C++ `Server::start`),
    or None when it declares none worth a chunk (an anonymous struct, `const x = 1`)."""
    if node.type in grammar.bindings:
        return _bound_function_name(node)
    if node.type == "type_declaration":  # Go: `type Server struct {...}`
        spec = next((child for child in node.named_children if child.type == "type_spec"), None)
        return _text(spec.child_by_field_name("name")) if spec is not None else None
    if node.type == "function_definition":  # C++: the name sits inside the declarator
        return _cpp_function_name(node)
    name = _text(node.child_by_field_name("name"))
    receiver = node.child_by_field_name("receiver")  # Go: `func (s *Server) Start()`
    if name and receiver is not None and (types := _descendants(receiver, "type_identifier")):
        return f"{_text(types[0])}.{name}"
    return name


def _bound_function_name(node: Node) -> str | None:
    for declarator in node.named_children:
        value = declarator.child_by_field_name("value")
        if value is not None and value.type in {"arrow_function", "function_expression", "function"}:
            return _text(declarator.child_by_field_name("name"))
    return None


def _cpp_function_name(node: Node) -> str | None:
    declarator = node.child_by_field_name("declarator")
    while declarator is not None and declarator.type not in {
        "identifier",
        "field_identifier",
        "qualified_identifier",
        "destructor_name",
        "operator_name",
    }:
        declarator = declarator.child_by_field_name("declarator")
    name = _text(declarator)
    return name.replace("::", ".") if name else None


def _descendants(node: Node, node_type: str) -> list[Node]:
    found = [node] if node.type == node_type else []
    for child in node.named_children:
        found.extend(_descendants(child, node_type))
    return found


def _text(node: Node | None) -> str | None:
    return node.text.decode("utf-8", errors="replace") if node is not None and node.text else None


def _ts_lines(node: Node) -> tuple[int, int]:
    """1-based inclusive lines of a node (a node ending at column 0 ends on the line before)."""
    start, end = node.start_point, node.end_point
    last = end.row if end.column == 0 and end.row > start.row else end.row + 1
    return start.row + 1, last
