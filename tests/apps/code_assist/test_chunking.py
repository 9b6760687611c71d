"""Chunking source files: definitions by `ast` and tree-sitter, module code between them, windows
where there is no syntax, one fact per test.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/code_assist/test_chunking.py -q
"""

import textwrap

from apps.code_assist.chunking import MAX_CHUNK_LINES, SPLIT_CLASS_LINES, WINDOW_LINES, chunk_source


def chunks_of(source: str, language: str | None):
    return chunk_source(textwrap.dedent(source), filepath="pkg/mod.x", language=language)


def by_symbol(chunks):
    return {chunk.symbol: chunk for chunk in chunks}


def long_python_class(methods: int = 15) -> str:
    method = "\n    def method_{i}(self):\n        x = {i}\n        return x\n"
    body = "".join(method.format(i=i) for i in range(methods))
    return f'class Store:\n    """Keeps things."""\n\n    size = 3\n{body}'


def test_a_long_class_is_cut_into_methods_named_class_dot_method():
    chunks = chunks_of(long_python_class(), "python")
    assert len(long_python_class().splitlines()) > SPLIT_CLASS_LINES
    method = by_symbol(chunks)["Store.method_1"]
    assert method.kind == "method"
    assert (method.start_line, method.end_line) == (10, 12)
    assert method.body.splitlines()[0] == "    def method_1(self):"


def test_a_long_class_keeps_its_header_in_a_class_chunk():
    header = chunks_of(long_python_class(), "python")[0]
    assert (header.symbol, header.kind, header.start_line, header.end_line) == ("Store", "class", 1, 4)
    assert '"""Keeps things."""' in header.body and "size = 3" in header.body


def test_a_short_class_is_one_chunk():
    chunks = chunks_of("class Point:\n    x = 0\n\n    def norm(self):\n        return 0\n", "python")
    assert [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks] == [("Point", "class", 1, 5)]


def test_decorators_and_the_comment_above_stay_with_their_function():
    source = """\
        import functools


        # Cached: the table is big.
        @functools.cache
        @staticmethod
        def table():
            return {}
        """
    table = by_symbol(chunks_of(source, "python"))["table"]
    assert (table.kind, table.start_line, table.end_line) == ("function", 4, 8)


def test_module_code_between_definitions_makes_module_chunks():
    source = """\
        import os

        def first():
            pass

        LIMIT = 3
        NAMES = ["a"]

        def second():
            pass
        """
    chunks = chunks_of(source, "python")
    modules = [(c.start_line, c.end_line) for c in chunks if c.kind == "module"]
    assert modules == [(1, 1), (6, 7)]
    assert all(c.symbol is None for c in chunks if c.kind == "module")


def test_python_with_a_syntax_error_is_cut_into_line_windows():
    source = "def broken(:\n" + "x = 1\n" * (WINDOW_LINES + 5)
    chunks = chunks_of(source, "python")
    assert [(c.kind, c.symbol, c.start_line) for c in chunks] == [("module", None, 1), ("module", None, 41)]


def test_an_unknown_language_is_cut_into_line_windows():
    chunks = chunks_of("line\n" * 100, None)
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 40), (41, 80), (81, 100)]


def test_a_definition_past_the_cap_is_cut_into_windows_that_keep_its_symbol():
    source = "def huge():\n" + "    x = 1\n" * (MAX_CHUNK_LINES + 10)
    chunks = chunks_of(source, "python")
    assert [(c.symbol, c.kind, c.start_line, c.end_line) for c in chunks] == [
        ("huge", "function", 1, MAX_CHUNK_LINES),
        ("huge", "function", MAX_CHUNK_LINES + 1, MAX_CHUNK_LINES + 11),
    ]


def test_form_feeds_do_not_shift_line_numbers():
    chunks = chunks_of("X = 1\n\x0c\ndef after():\n    pass\n", "python")
    assert by_symbol(chunks)["after"].start_line == 3


def test_a_typescript_interface_is_a_class_chunk():
    source = """\
        import { Point } from "./point";

        /** Anything with an area. */
        export interface Shape {
          area(): number;
        }
        """
    shape = by_symbol(chunks_of(source, "typescript"))["Shape"]
    assert (shape.kind, shape.start_line, shape.end_line) == ("class", 3, 6)


def test_a_javascript_arrow_function_bound_to_a_const_is_a_function():
    chunks = chunks_of("const total = (items) => items.length;\n", "javascript")
    assert [(c.symbol, c.kind) for c in chunks] == [("total", "function")]


def test_go_funcs_and_methods_named_by_their_receiver():
    source = """\
        package main

        type Server struct{ port int }

        // Start listens.
        func (s *Server) Start() error {
            return nil
        }

        func main() {}
        """
    symbols = by_symbol(chunks_of(source, "go"))
    assert (symbols["Server.Start"].kind, symbols["Server.Start"].start_line) == ("method", 5)
    assert (symbols["main"].kind, symbols["main"].start_line) == ("function", 10)
    assert symbols["Server"].kind == "class"


def test_a_long_java_class_is_cut_into_methods_with_their_annotations():
    methods = "".join(f"  @Override\n  public int m{i}() {{\n    return {i};\n  }}\n\n" for i in range(15))
    source = f"package a;\n\npublic class Greeter {{\n  private int n;\n\n{methods}}}\n"
    symbols = by_symbol(chunks_of(source, "java"))
    assert (symbols["Greeter.m0"].start_line, symbols["Greeter.m0"].end_line) == (6, 9)
    assert symbols["Greeter"].body.endswith("private int n;")


def test_a_cpp_out_of_line_method_is_named_class_dot_method():
    chunks = chunks_of("#include <x>\n\nvoid Foo::bar() {}\n", "cpp")
    assert [(c.symbol, c.kind) for c in chunks][-1] == ("Foo.bar", "method")
