"""Post-processing of code completions: what the completion service returns to an editor, given the
raw text a model generated at a cursor. The empty string means "show nothing".

    postprocess(raw, prefix=text_before_cursor, suffix=text_after_cursor, language="python")

The steps, in order, each a function of its own:

0. `cut_loops`: a model caught in a loop (`self.bottom_in_in_in_in_in`, the same import line over
   and over) writes nothing useful past the loop's first turn. A line where a piece of 2 to 32
   characters with a letter or digit repeats back to back 4 times or more, over 24 characters or
   more, is cut after the piece's first occurrence, and the completion ends there; so does one
   at the third identical line in a row, after the first. The service also stops generating
   there (`is_looping`).
1. `limit_scope`: keep the part of the completion that belongs at this cursor.
   - Text after the cursor on its line (mid-line): up to the end of the line. Closing brackets,
     quotes and `;` alone after the cursor (an editor's auto-closed pair) don't count as text.
   - Only indentation before the cursor (a new line): a block. Its indentation is that of the first
     non-blank line; it ends before the first later line indented less (the completion left the
     block, e.g. a `}` closing the enclosing block).
   - Text before the cursor and none after: the rest of the line, then, if the completed line
     opens a block (ends with `:` or an opening bracket, before any comment), its body: the lines
     indented deeper than it. A completion that begins with a line break is scoped as a new line.
   A block ends before the line that leaves it, or with it when that line closes brackets (`}`,
   `)` ...) the suffix leaves open: no auto-closed text after the cursor, and the suffix's next
   non-blank line is indented less than the block (or absent) and isn't that same closer. Before
   auto-closed text (`{|}`) a block ends with a line break, so the `}` gets its own line.
2. `drop_suffix_repetition`: drop what the suffix already has.
   - Stop before a completion line equal (indentation included) to the suffix's next non-blank line.
   - Cut a tail of the completion that the suffix starts with, when it is more than punctuation
     (it has a letter or digit, and a line break or 3 characters).
   - Cut trailing closing brackets and quotes that the suffix has at the cursor when the line then
     balances better (`foo(` + `a)` + `)`: the editor auto-closed the paren; `bar(` + `f(a)` + `)`:
     it didn't).
3. `trim_blank_tail`: trailing whitespace and blank lines go when nothing follows the cursor on its
   line; a whitespace-only completion becomes "".
4. `fix_syntax`: never make the file parse worse (`syntax.insertion_check` says what that means; a
   file already broken while typing is judged only on what the completion changes). Otherwise
   keep the longest run of the completion's first lines that doesn't, trying runs that close the
   brackets they open before the others and skipping runs that end right before a more indented
   line (a block header without its body never parses); else, when the completion continues the
   cursor's line, that line cut after one of its last three closing brackets; else "". At most
   1 + `MAX_CHECKS` checks, each a region or incremental parse (see `syntax.py`), and no new one
   past `SYNTAX_BUDGET_S`: typically 1 ms on a 2,000-line Python file and 4 ms on a 1,000-line
   JavaScript one. Unknown languages skip it.

It is not a model, a ranker of several completions nor an editor protocol, and it knows nothing
about tokens: only text before, inside and after the cursor.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from itertools import islice

from apps.code_assist.languages import line_comment
from apps.code_assist.syntax import bracket_delta, insertion_check

MAX_CHECKS = 8  # syntax checks of shorter candidates per completion, at most
SYNTAX_BUDGET_S = 0.02  # no shorter candidate is tried past this time (the completion is dropped)
OPENERS = ("(", "[", "{", ":")  # a line ending with one of these opens a block
CLOSERS = ")]}"
AUTO_CLOSED = set(")]}\"'`;")  # what an editor may have typed after the cursor on its own
_PAIRS = {")": "(", "]": "[", "}": "{"}
_PROBE = "\x00probe"  # text no model writes


def postprocess(completion: str, *, prefix: str, suffix: str, language: str | None) -> str:
    """The completion to show between `prefix` and `suffix`, or "" to show nothing."""
    completion = cut_loops(completion)
    completion = limit_scope(completion, prefix=prefix, suffix=suffix, language=language)
    completion = drop_suffix_repetition(completion, prefix=prefix, suffix=suffix)
    completion = trim_blank_tail(completion, suffix=suffix)
    completion = fix_syntax(completion, prefix=prefix, suffix=suffix, language=language)
    return trim_blank_tail(completion, suffix=suffix)


# --- 0. loops ---------------------------------------------------------------------------------------

_LOOP = re.compile(r"(.{2,32}?)\1{3,}")  # a piece and 3 or more copies of it, back to back
MIN_LOOP_CHARS = 24
SAME_LINES = 3


def cut_loops(completion: str) -> str:
    """`completion` up to its first loop (rules in the module docstring)."""
    lines = completion.split("\n")
    for i, line in enumerate(lines):
        for match in _LOOP.finditer(line):
            if len(match[0]) >= MIN_LOOP_CHARS and re.search(r"\w", match[1]):
                return "\n".join([*lines[:i], line[: match.start() + len(match[1])]])
        if i >= SAME_LINES - 1 and line.strip() and len(set(lines[i - SAME_LINES + 1 : i + 1])) == 1:
            return "\n".join(lines[: i - SAME_LINES + 2])
    return completion


def is_looping(completion: str) -> bool:
    """Whether the text generated so far is caught in a loop: a generator may stop."""
    return cut_loops(completion) != completion


# --- 1. scope ---------------------------------------------------------------------------------------


def is_mid_line(suffix: str) -> bool:
    """Whether the cursor has text after it on its line (auto-closed characters aside): its
    completion ends with the line."""
    return not set(_line_tail(suffix).strip()) <= AUTO_CLOSED


def scope_is_settled(completion: str, *, prefix: str, suffix: str, language: str | None) -> bool:
    """Whether `limit_scope` already ended `completion` within its complete lines, so that no more
    generated text can change what is kept: a generator may stop there. Probed by appending one
    deeply indented line, which would continue any scope still open."""
    if "\n" not in completion:
        return False
    complete = completion[: completion.rfind("\n") + 1]
    probe = " " * 64 + _PROBE
    return _PROBE not in limit_scope(complete + probe, prefix=prefix, suffix=suffix, language=language)


def limit_scope(completion: str, *, prefix: str, suffix: str, language: str | None) -> str:
    """The part of `completion` that belongs at the cursor (rules in the module docstring)."""
    head = _line_head(prefix)
    lines = completion.split("\n")
    if is_mid_line(suffix):
        return lines[0]
    if not head.strip():
        return _block(lines, head=head, floor=-1, suffix=suffix)
    if _opens_block(head + lines[0], language=language):
        body = _block(lines[1:], head="", floor=_indent(head), suffix=suffix)
        return lines[0] + "\n" + body if body else lines[0]
    if not lines[0].strip() and len(lines) > 1:
        return lines[0] + "\n" + _block(lines[1:], head="", floor=-1, suffix=suffix)
    return lines[0]


def _block(lines: list[str], *, head: str, floor: int, suffix: str) -> str:
    """`lines` (the first written after `head`) while they stay in the block that the first
    non-blank one starts, which must be indented deeper than `floor`."""
    block = None
    for i, line in enumerate(lines):
        text = head + line if i == 0 else line
        if not text.strip():
            continue
        if block is None and _indent(text) > floor:
            block = _indent(text)
        elif block is None or _indent(text) < block:
            return _end_block(lines[:i], stop=line, block=block, suffix=suffix)
    return "\n".join(lines)


def _end_block(kept: list[str], *, stop: str, block: int | None, suffix: str) -> str:
    """The block `kept`, ended before `stop`, or with it when `stop` closes a block that the suffix
    leaves open. Before text after the cursor (an auto-closed `}`), it ends on a line break."""
    if block is not None and _is_closer_line(stop) and _suffix_leaves_open(suffix, stop=stop, block=block):
        return "\n".join([*kept, stop])
    text = "\n".join(kept)
    if block is not None and _line_tail(suffix).strip():
        return text + "\n" + stop[: _indent(stop)]
    return text


def _suffix_leaves_open(suffix: str, *, stop: str, block: int) -> bool:
    if _line_tail(suffix).strip():
        return False  # the editor's auto-closed bracket closes it
    following = _next_line(suffix)
    if following is None:
        return True
    return _indent(following) < block and following.rstrip() != stop.rstrip()


def _is_closer_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and stripped[0] in CLOSERS


def _opens_block(line: str, *, language: str | None) -> bool:
    code = line.split(line_comment(language))[0]
    return line.rstrip().endswith(OPENERS) or code.rstrip().endswith(OPENERS)


# --- 2. suffix repetition -------------------------------------------------------------------------


def drop_suffix_repetition(completion: str, *, prefix: str, suffix: str) -> str:
    """`completion` without what the suffix already has (rules in the module docstring)."""
    completion = _stop_at_next_line(completion, prefix=prefix, suffix=suffix)
    completion = _cut_overlap(completion, suffix=suffix)
    return _cut_auto_closed(completion, prefix=prefix, suffix=suffix)


def _stop_at_next_line(completion: str, *, prefix: str, suffix: str) -> str:
    following = _next_line(suffix)
    if following is None:
        return completion
    lines = completion.split("\n")
    head = _line_head(prefix)
    for i, line in enumerate(lines):
        whole = head + line if i == 0 else line
        if (i > 0 or not head.strip()) and whole.rstrip() == following.rstrip():
            return "\n".join(lines[:i])
    return completion


def _cut_overlap(completion: str, *, suffix: str) -> str:
    for start in range(len(completion)):
        overlap = completion[start:]
        if suffix.startswith(overlap):
            substantial = "\n" in overlap.strip() or len(overlap.strip()) >= 3
            return completion[:start] if substantial and re.search(r"\w", overlap) else completion
    return completion


def _cut_auto_closed(completion: str, *, prefix: str, suffix: str) -> str:
    tail = _line_tail(suffix)
    line = _last_line(_line_head(prefix), completion)
    for size in range(min(len(tail), len(completion)), 0, -1):
        overlap = tail[:size]
        if set(overlap) <= AUTO_CLOSED and completion.endswith(overlap):
            shorter = _last_line(_line_head(prefix), completion[:-size])
            if _imbalance(shorter + tail) < _imbalance(line + tail):
                return completion[:-size]
    return completion


def _imbalance(line: str) -> int:
    """Brackets without a partner plus quotes without one (strings are not parsed: a rough count)."""
    stack: list[str] = []
    unmatched = 0
    for char in line:
        if char in "([{":
            stack.append(char)
        elif char in CLOSERS:
            if stack and stack[-1] == _PAIRS[char]:
                stack.pop()
            else:
                unmatched += 1
    return unmatched + len(stack) + sum(line.count(quote) % 2 for quote in "\"'`")


# --- 3. blank tail ------------------------------------------------------------------------------------


def trim_blank_tail(completion: str, *, suffix: str) -> str:
    """`completion` without trailing blank lines and spaces when nothing follows the cursor on its
    line; "" when it is only whitespace."""
    if not completion.strip():
        return ""
    return completion if _line_tail(suffix).strip() else completion.rstrip()


# --- 4. syntax --------------------------------------------------------------------------------------


def fix_syntax(completion: str, *, prefix: str, suffix: str, language: str | None) -> str:
    """`completion`, or its longest start that doesn't make the file parse worse, or ""."""
    deadline = time.perf_counter() + SYNTAX_BUDGET_S
    adds_errors = insertion_check(prefix=prefix, suffix=suffix, language=language)
    if adds_errors is None or not completion.strip() or not adds_errors(completion):
        return completion
    for candidate in islice(_shorter_candidates(completion, head=_line_head(prefix)), MAX_CHECKS):
        if time.perf_counter() > deadline:
            break
        if not adds_errors(candidate):
            return candidate
    return ""


def _shorter_candidates(completion: str, *, head: str) -> Iterator[str]:
    """Starts of `completion`, longest first: runs of whole lines that close the brackets they open
    (counted from the start of the cursor's line), then the other runs, then cuts of the first line
    when it continues text before the cursor (a new line cut short is a different statement)."""
    lines = completion.split("\n")
    depths = [_indent(head + lines[0]), *(_indent(line) for line in lines[1:])]
    ends = [
        end
        for end in range(len(lines) - 1, 0, -1)
        if lines[end - 1].strip() and not (lines[end].strip() and depths[end] > depths[end - 1])
    ]  # a run never ends on a blank line or right before an indented one (a header without body)
    open_after = _open_brackets(head, lines)
    for end in sorted(ends, key=lambda end: open_after[end - 1] > 0):  # stable: longest first
        yield "\n".join(lines[:end])
    if head.strip():
        cuts = [i + 1 for i, char in enumerate(lines[0][:-1]) if char in CLOSERS]
        for cut in reversed(cuts[-3:]):
            yield lines[0][:cut]


def _open_brackets(head: str, lines: list[str]) -> list[int]:
    """How many brackets are open after each line, counting from the start of the cursor's line."""
    depth, after = bracket_delta(head), []
    for line in lines:
        depth += bracket_delta(line)
        after.append(depth)
    return after


# --- lines around the cursor -------------------------------------------------------------------------


def _line_head(prefix: str) -> str:
    """The cursor's line up to the cursor."""
    return prefix.rpartition("\n")[2]


def _line_tail(suffix: str) -> str:
    """The cursor's line after the cursor."""
    return suffix.partition("\n")[0]


def _next_line(suffix: str) -> str | None:
    """The first non-blank line after the cursor's, or None."""
    start = suffix.find("\n")
    while start != -1:
        end = suffix.find("\n", start + 1)
        line = suffix[start + 1 : end if end != -1 else len(suffix)]
        if line.strip():
            return line
        start = end
    return None


def _last_line(head: str, completion: str) -> str:
    """The line the completion ends on, as the file will read it up to the suffix."""
    return completion.rpartition("\n")[2] if "\n" in completion else head + completion


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
