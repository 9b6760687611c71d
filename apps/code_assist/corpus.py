"""The code adapter's text: Python sources of permissively licensed packages installed here, cut
into fill-in-the-middle examples, and the held-out packages' line-completion cases.

    files = package_files("sqlalchemy")                          # [(root, relative path), ...]
    examples = fim_examples(TRAINING_PACKAGES, count=6000, seed=0)  # {"prefix", "middle", "suffix"}
    cases = line_cases(HELD_OUT_PACKAGES, count=300, seed=0)     # cursor mid-line, target: the rest

Packages are found by import name in this environment (never imported: only their files are
read) and each must declare a licence in PERMISSIVE; `licences()` records which, for the adapter's
card. HELD_OUT_PACKAGES are never trained on: the benchmark completes lines in them, with their
own repository as context. Examples are cut with the serving budgets of `prompts.py`, and half
of them carry snippets retrieved from the rest of their package, in the served format, so the
adapter learns to use repository context. This module reads and cuts text; it does not train.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import random
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from apps.code_assist.prompts import CANDIDATE_CHARS, cut_prefix, cut_suffix, render_context
from apps.code_assist.repository_index import RepositoryIndex

log = logging.getLogger(__name__)

# Import names. Pure-Python packages under MIT, BSD or Apache licences that the project's own
# dependencies install; HELD_OUT_PACKAGES come with the serve and customer-service extras too.
TRAINING_PACKAGES = (
    "sqlalchemy",
    "requests",
    "urllib3",
    "rich",
    "jinja2",
    "pydantic",
    "fastapi",
    "httpx",
    "anyio",
    "packaging",
    "markdown_it",
    "yaml",
    "attr",
    "pluggy",
    "jsonschema",
    "websockets",
    "dateutil",
    "uvicorn",
    "mako",
    "pygments",
    "starlette",
    "idna",
)
HELD_OUT_PACKAGES = ("click", "h11", "alembic")
PERMISSIVE = ("MIT", "BSD", "Apache", "ISC", "PSF")
DEV_PERCENT = 5  # of each training package's files, by a stable hash of the path: early stopping
CONTEXT_SHARE = 0.5  # of examples that carry retrieved snippets
MAX_FILE_CHARS = 200_000


@dataclass(frozen=True)
class SourceFile:
    package: str
    root: Path  # the package's folder
    path: str  # relative to root, POSIX

    def read(self) -> str:
        return (self.root / self.path).read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True)
class LineCase:
    """A cursor in the middle of a line of a held-out file; the target is the rest of the line."""

    file: SourceFile
    prefix: str
    suffix: str
    target: str


def package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the package {name!r} is not installed here (pip install the project's test extras)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_files(name: str) -> list[SourceFile]:
    """The package's .py files (tests and vendored copies left out), sorted."""
    root = package_root(name)
    skip = ("tests", "test", "testing", "_vendor", "vendor")
    return [
        SourceFile(name, root, path.relative_to(root).as_posix())
        for path in sorted(root.rglob("*.py"))
        if not set(path.relative_to(root).parts[:-1]) & set(skip) and path.stat().st_size <= MAX_FILE_CHARS
    ]


def licences(packages: Iterable[str]) -> dict[str, str]:
    """{import name: "distribution version (licence)"}; a ValueError for one not in PERMISSIVE."""
    distributions = importlib.metadata.packages_distributions()
    found = {}
    for name in packages:
        dist = importlib.metadata.distribution(distributions[name][0])
        meta = dist.metadata
        classifiers = [
            c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or [] if "License" in c
        ]
        licence = meta.get("License-Expression") or (
            classifiers[0] if classifiers else meta.get("License", "")
        )
        licence = licence.splitlines()[0][:60] if licence else ""
        if not any(word.lower() in licence.lower() for word in PERMISSIVE):
            raise ValueError(f"{name} ({meta['Name']}) declares licence {licence!r}, not one of {PERMISSIVE}")
        found[name] = f"{meta['Name']} {dist.version} ({licence})"
    return found


def is_dev(file: SourceFile) -> bool:
    digest = hashlib.sha256(f"{file.package}/{file.path}".encode()).digest()
    return digest[0] * 100 // 256 < DEV_PERCENT


# ----------------------------------------------------------------------------- cutting


def cut_line(text: str, rng: random.Random) -> tuple[str, str, str] | None:
    """Cursor inside a random non-blank line (at its indentation a third of the time); the
    middle is the rest of that line."""
    lines = text.splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if len(line.strip()) > 1]
    if not candidates:
        return None
    i = rng.choice(candidates)
    line = lines[i].rstrip("\n")
    indent = len(line) - len(line.lstrip())
    column = indent if rng.random() < 1 / 3 else rng.randrange(indent, len(line.rstrip()))
    start = sum(len(x) for x in lines[:i]) + column
    end = start + len(line) - column
    return text[:start], text[start:end], text[end:]


def cut_block(text: str, rng: random.Random) -> tuple[str, str, str] | None:
    """Cursor at the indentation of a random non-blank line; the middle is that line and up to
    five more (it ends before the last line's newline)."""
    lines = text.splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    if not candidates:
        return None
    i = rng.choice(candidates)
    j = min(len(lines), i + rng.randint(1, 6))
    indent = len(lines[i]) - len(lines[i].lstrip())
    start = sum(len(x) for x in lines[:i]) + indent
    end = sum(len(x) for x in lines[:j]) - (1 if lines[j - 1].endswith("\n") else 0)
    return text[:start], text[start:end], text[end:]


def cut_span(text: str, rng: random.Random) -> tuple[str, str, str] | None:
    """A random span of 1 to 160 characters (the classic FIM cut)."""
    if len(text) < 2:
        return None
    start = rng.randrange(len(text) - 1)
    end = min(len(text), start + rng.randint(1, 160))
    return text[:start], text[start:end], text[end:]


CUTS = ((cut_line, 0.45), (cut_block, 0.35), (cut_span, 0.20))


def fim_examples(
    packages: Iterable[str], *, count: int, seed: int = 0, split: str = "train", progress: bool = True
) -> list[dict[str, str]]:
    """`count` FIM examples ({"prefix", "middle", "suffix"}) over the packages' files of `split`
    ("train" or "dev"), files drawn in proportion to their length (capped at 20,000 characters)."""
    rng = random.Random(seed)
    pool: list[tuple[SourceFile, str, RepositoryIndex]] = []
    for name in tqdm(list(packages), desc=f"indexing ({split})", disable=not progress):
        index = RepositoryIndex.build(package_root(name), progress=False)
        for file in package_files(name):
            if is_dev(file) == (split == "dev"):
                text = file.read()
                if text.strip():
                    pool.append((file, text, index))
    weights = [min(len(text), 20_000) for _, text, _ in pool]
    examples = []
    with tqdm(total=count, desc=f"cutting ({split})", disable=not progress) as bar:
        while len(examples) < count:
            file, text, index = rng.choices(pool, weights)[0]
            cut = rng.choices([c for c, _ in CUTS], [w for _, w in CUTS])[0](text, rng)
            if cut is None or not cut[1].strip() or len(cut[1]) > 400:
                continue
            prefix, middle, suffix = cut
            examples.append(_example(file, prefix, middle, suffix, index=index, rng=rng))
            bar.update()
    return examples


def _example(file: SourceFile, prefix, middle, suffix, *, index: RepositoryIndex, rng: random.Random):
    kept_prefix, kept_suffix = cut_prefix(prefix), cut_suffix(suffix)
    context = ""
    if rng.random() < CONTEXT_SHARE:
        snippets = index.relevant_snippets(
            prefix=kept_prefix,
            suffix=kept_suffix,
            filepath=file.path,
            language="python",
            budget_chars=CANDIDATE_CHARS,
        )
        context = render_context(snippets, language="python")
    return {"prefix": context + kept_prefix, "middle": middle, "suffix": kept_suffix}


def line_cases(packages: Iterable[str], *, count: int, seed: int = 0) -> list[LineCase]:
    """`count` line-completion cases: the cursor in a line of code (not a comment, nor a line of
    a string spanning lines such as a docstring: those test prose, not code) of the packages'
    files, at least two characters of code after it."""
    rng = random.Random(seed)
    files = [f for name in packages for f in package_files(name)]
    texts = {f: f.read() for f in files}
    prose = {f: prose_lines(texts[f]) for f in files}
    cases: list[LineCase] = []
    while len(cases) < count:
        file = rng.choice(files)
        cut = cut_line(texts[file], rng)
        if cut is None:
            continue
        prefix, target, suffix = cut
        line = prefix[prefix.rfind("\n") + 1 :] + target
        if prefix.count("\n") + 1 in prose[file] or line.lstrip().startswith("#") or len(target.strip()) < 2:
            continue
        cases.append(LineCase(file, prefix, suffix, target))
    return cases


def prose_lines(text: str) -> set[int]:
    """Line numbers (1-based) a string spanning several lines touches; every line when the file
    does not tokenize (it is then no use as a test of code)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return set(range(1, text.count("\n") + 2))
    lines: set[int] = set()
    for token in tokens:
        if token.type == tokenize.STRING and token.end[0] > token.start[0]:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines
