"""De-identification of protected health information (PHI) before any text is logged or shown:
names, dates, record numbers, phone numbers, e-mail and postal addresses.

    found = find_phi("Seen by Dr. Anna Berg on 03/04/2024, MRN 12345678, tel. (555) 123-4567.")
    [(p.kind, p.start, p.end) for p in found]   # [("NAME", 8, 22), ("DATE", 26, 36), ...]
    redact(text)      # "Seen by [NAME] on [DATE], MRN [ID], tel. [PHONE]."

Rules, in the spirit of the HIPAA Safe Harbor list and of Philter/`deid`-style pattern
de-identifiers: e-mail addresses, phone and fax numbers, dates (numeric, with month names, ISO),
record / account / member numbers introduced by a label (MRN, record, account, ...) or long runs
of digits, street addresses and postcodes, and names after a title (Dr., Mr., Mrs., Ms., Prof.)
or a label (patient, name, seen by, ...). A pattern-based de-identifier misses names it has no
cue for; the NER API therefore never logs the input text at all, only its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("EMAIL", "PHONE", "DATE", "ID", "ADDRESS", "NAME")

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_NAME_WORD = r"(?:[A-Z]')?[A-Z][a-z]+(?:-[A-Z][a-z]+)?"  # Anna, O'Neil, Smith-Jones
_TITLE = r"(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?"
_STREET = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Square|Sq)\.?"
)

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("PHONE", re.compile(
        r"(?<![\w/])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?![\w/])"
    )),
    ("DATE", re.compile(r"\b\d{4}-\d{2}-\d{2}\b")),
    ("DATE", re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b")),
    ("DATE", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{4}})?\b", re.IGNORECASE)),
    ("DATE", re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b", re.IGNORECASE)),
    ("ID", re.compile(
        r"(?:\b(?:MRN|NHS|SSN|record|account|acct|member|patient|chart|case|medical record)"
        r"(?:\s+(?:no|number|num|id|#))?\.?\s*[:#]?\s*)(?P<phi>[A-Z]{0,3}-?\d[\d-]{3,})",
        re.IGNORECASE,
    )),
    ("ID", re.compile(r"\b\d{7,}\b")),
    ("ADDRESS", re.compile(rf"\b\d{{1,5}}\s+(?:{_NAME_WORD}\s+){{1,3}}{_STREET}(?=\W|$)")),
    ("ADDRESS", re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b")),  # UK postcode
    ("ADDRESS", re.compile(r"\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")),  # US state + ZIP
    ("NAME", re.compile(
        rf"\b{_TITLE}\s+(?P<phi>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
    )),
    ("NAME", re.compile(
        rf"\b(?:[Pp]atient|[Nn]ame|[Ss]een by|[Rr]eferred by|[Ss]igned by|[Nn]urse|[Cc]ontact)\s*:?\s+"
        rf"(?:{_TITLE}\s+)?(?P<phi>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
    )),
]  # fmt: skip


@dataclass(frozen=True)
class Phi:
    kind: str  # one of KINDS
    start: int
    end: int  # exclusive character offset


def find_phi(text: str) -> list[Phi]:
    """The PHI spans of `text`, by start, none overlapping (an earlier pattern wins a tie; a
    longer span wins an overlap)."""
    candidates = []
    for order, (kind, pattern) in enumerate(PATTERNS):
        for match in pattern.finditer(text):
            group = "phi" if "phi" in pattern.groupindex else 0
            start, end = match.span(group)
            if end > start:
                candidates.append((start, end, order, kind))
    candidates.sort(key=lambda c: (-(c[1] - c[0]), c[2]))
    kept: list[Phi] = []
    for start, end, _, kind in candidates:
        if all(end <= p.start or p.end <= start for p in kept):
            kept.append(Phi(kind, start, end))
    return sorted(kept, key=lambda p: p.start)


def redact(text: str, found: list[Phi] | None = None) -> str:
    """`text` with each PHI span replaced by its kind in brackets: "[NAME]", "[DATE]" ..."""
    found = find_phi(text) if found is None else found
    out, position = [], 0
    for phi in found:
        out += [text[position : phi.start], f"[{phi.kind}]"]
        position = phi.end
    out.append(text[position:])
    return "".join(out)
