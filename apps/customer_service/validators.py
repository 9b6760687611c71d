"""Key fields found in free text by rules, normalised and checked: amounts with a currency, dates,
the last four digits of a card, full card numbers (Luhn), UK sort codes and account numbers, and
IBANs (ISO 13616 mod-97).

    find_key_fields("Send £1,250.50 to GB82 WEST 1234 5698 7654 32 tomorrow", reference=date(2024, 3, 12))
    # [Entity("amount_of_money", {"amount": "1250.50", "currency": "GBP"}, 5, 14, ...),
    #  Entity("iban", "GB82WEST12345698765432", 18, 45, ...), Entity("date", "2024-03-13", 46, 54, ...)]
    mask_card_numbers("my card is 4111 1111 1111 1111")      # "my card is **** **** **** 1111"

Every field comes back as an `Entity` (extractor "validator") with its normalised `value` and
`valid` / `reason`: an IBAN whose checksum fails or 31/02/2024 is returned, flagged, not dropped.
A full card number is recognised so that it is never stored: its value keeps the last four digits.
When matches overlap, the longest wins (ties: the earlier finder in FINDERS).

This module is rules only: no model (slots.py tags slots with one and merges these in), no
storage, no dialogue policy. `Entity` lives here, the lowest layer, and slots.py re-exports it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

EXTRACTOR = "validator"


@dataclass(frozen=True)
class Entity:
    """One key field of a text, shaped like Rasa's entity dict: `text[start:end]` is where it is.

    `value` is normalised (a string, or a dict for amounts); `reason` says why a field is not
    `valid`, or warns about a valid one (a full card number).
    """

    entity: str
    value: Any
    start: int
    end: int
    confidence: float | None = None
    extractor: str = EXTRACTOR
    valid: bool = True
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- amounts

CURRENCY_SYMBOLS = {"£": "GBP", "€": "EUR", "$": "USD", "¥": "JPY"}  # NOTE: "$" is read as USD
CURRENCY_CODES = ("GBP", "EUR", "USD", "CHF", "JPY", "CAD", "AUD", "PLN", "SEK", "NOK", "DKK")
CURRENCY_WORDS = {
    "pound": "GBP", "pounds": "GBP", "quid": "GBP", "sterling": "GBP", "euro": "EUR", "euros": "EUR",
    "dollar": "USD", "dollars": "USD", "franc": "CHF", "francs": "CHF", "yen": "JPY",
}  # fmt: skip
MINOR_UNITS = {"JPY": 0}  # decimal places (ISO 4217); every other currency here has 2

# 1,250.50 | 1250.50 | 12,50 (a decimal comma: one or two digits after it); never part of a longer number
_NUMBER = r"(?<![\d.,])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\d+,\d{1,2})(?!\d|[.,]\d)"
_SYMBOL = "[" + re.escape("".join(CURRENCY_SYMBOLS)) + "]"
_CODE = "|".join(CURRENCY_CODES)
_WORD = "|".join(sorted(CURRENCY_WORDS, key=len, reverse=True))
_AMOUNTS = [
    re.compile(rf"(?P<symbol>{_SYMBOL})\s?(?P<number>{_NUMBER})"),  # £12.50
    re.compile(rf"(?P<number>{_NUMBER})\s?(?P<symbol>{_SYMBOL})"),  # 40€
    re.compile(rf"\b(?P<code>{_CODE})\s?(?P<number>{_NUMBER})", re.IGNORECASE),  # EUR 12.50
    re.compile(rf"(?P<number>{_NUMBER})\s?(?P<code>{_CODE})\b", re.IGNORECASE),  # 12.50 EUR
    re.compile(rf"(?P<number>{_NUMBER})\s?(?P<word>{_WORD})\b", re.IGNORECASE),  # 20 pounds
    re.compile(r"(?<![\d.,])(?P<pence>\d+)(?:p(?!\.?m\b)|\s?pence)\b", re.IGNORECASE),  # 50p, not 5 p.m.
]


def _amounts(text: str, *, reference: datetime.date) -> Iterator[Entity]:
    for pattern in _AMOUNTS:
        for match in pattern.finditer(text):
            yield _amount(match)


def _amount(match: re.Match[str]) -> Entity:
    groups = match.groupdict()
    if groups.get("pence"):
        amount, currency = Decimal(groups["pence"]) / 100, "GBP"
    else:
        amount = _decimal(groups["number"])
        if groups.get("symbol"):
            currency = CURRENCY_SYMBOLS[groups["symbol"]]
        elif groups.get("code"):
            currency = groups["code"].upper()
        else:
            currency = CURRENCY_WORDS[groups["word"].lower()]
    places = MINOR_UNITS.get(currency, 2)
    reason = None
    if -amount.as_tuple().exponent > places:  # type: ignore[operator]
        reason = f"{currency} amounts have at most {places} decimal places"
    else:
        amount = amount.quantize(Decimal(1).scaleb(-places))
    value = {"amount": str(amount), "currency": currency}
    return Entity("amount_of_money", value, match.start(), match.end(), valid=reason is None, reason=reason)


def _decimal(number: str) -> Decimal:
    """1,250.50 -> 1250.50; 12,50 -> 12.50 (a comma before one or two final digits is decimal)."""
    if re.fullmatch(r"\d+,\d{1,2}", number):
        return Decimal(number.replace(",", "."))
    return Decimal(number.replace(",", ""))


# ----------------------------------------------------------------------------- dates

MONTHS = {
    name: number
    for number, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
         ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
         ("oct", "october"), ("nov", "november"), ("dec", "december")],
        start=1,
    )
    for name in names
}  # fmt: skip
RELATIVE_DAYS = {"yesterday": -1, "today": 0, "tomorrow": 1}

_MONTH = r"(?P<month_name>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\b\.?"
_ORDINAL = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?P<year>\d{4})\b)?"  # no year: the reference date's year
_DATES = [
    re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})\b"),  # 2024-03-12
    re.compile(r"\b(?P<day>\d{1,2})([/.])(?P<month>\d{1,2})\2(?P<year>\d{4}|\d{2})\b"),  # 12/03/24, day first
    re.compile(r"\b(?P<day>\d{1,2})-(?P<month>\d{1,2})-(?P<year>\d{4})\b"),  # 12-03-2024
    re.compile(rf"\b{_ORDINAL}\s+(?:of\s+)?{_MONTH}{_YEAR}", re.IGNORECASE),  # 3rd of March 2024
    re.compile(rf"\b{_MONTH}\s+(?:the\s+)?{_ORDINAL}\b{_YEAR}", re.IGNORECASE),  # March the 3rd, 2024
    re.compile(r"\b(?P<relative>" + "|".join(RELATIVE_DAYS) + r")\b", re.IGNORECASE),
]


def _dates(text: str, *, reference: datetime.date) -> Iterator[Entity]:
    for pattern in _DATES:
        for match in pattern.finditer(text):
            yield _date(match, reference=reference)


def _date(match: re.Match[str], *, reference: datetime.date) -> Entity:
    groups = match.groupdict()
    if groups.get("relative"):
        day = reference + datetime.timedelta(days=RELATIVE_DAYS[groups["relative"].lower()])
        return Entity("date", day.isoformat(), match.start(), match.end())
    month = MONTHS[groups["month_name"].lower()] if groups.get("month_name") else int(groups["month"])
    year = reference.year if groups.get("year") is None else int(groups["year"])
    if year < 100:
        year += 2000  # 12/03/24
    value, reason = _checked_date(year=year, month=month, day=int(groups["day"]))
    return Entity("date", value, match.start(), match.end(), valid=reason is None, reason=reason)


def _checked_date(*, year: int, month: int, day: int) -> tuple[str | None, str | None]:
    """(ISO date, None), or (None, why no such date exists)."""
    if not 1 <= month <= 12:
        return None, f"there is no month {month} (numeric dates are read day first)"
    try:
        return datetime.date(year, month, day).isoformat(), None
    except ValueError:
        return None, f"there is no day {day} in {datetime.date(year, month, 1):%B %Y}"


# ----------------------------------------------------------------------------- cards


def luhn_valid(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812) of a string of digits."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


# 13-19 digits: contiguous, in groups of four, or Amex's 4-6-5; never part of a longer number
_CARD_NUMBER = re.compile(
    r"(?<![\d-])(?:\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{5}|\d{13,19})(?![\d-]|\s\d)"
)
_LAST_FOUR = [
    re.compile(r"\b(?:ending|ends)\s+(?:in|with)\s+(?P<digits>\d{4})\b", re.IGNORECASE),
    # "my card, the one ending 4321": the bare form only after a card, where four digits are its end
    re.compile(r"\bcard\b[^\d\n.]{0,25}?\b(?:ending|ends)\s+(?P<digits>\d{4})\b", re.IGNORECASE),
    re.compile(r"\blast\s+(?:four|4)\b[^\d\n]{0,25}?(?P<digits>\d{4})\b", re.IGNORECASE),
    re.compile(r"(?<![\w*•])(?P<mask>[*xX•]{2,}(?:[ -]?[*xX•]{2,})*[ -]?)(?P<digits>\d{4})\b"),  # ****1234
]


def _card_numbers(text: str, *, reference: datetime.date) -> Iterator[Entity]:
    for match in _CARD_NUMBER.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            masked = "*" * (len(digits) - 4) + digits[-4:]
            reason = "a full card number: keep only the last four digits, never store the text"
            yield Entity("card_number", masked, match.start(), match.end(), reason=reason)


def _card_last_four(text: str, *, reference: datetime.date) -> Iterator[Entity]:
    for pattern in _LAST_FOUR:
        for match in pattern.finditer(text):
            start = match.start() if match.groupdict().get("mask") else match.start("digits")
            yield Entity("card_last_four", match.group("digits"), start, match.end("digits"))


def mask_card_numbers(text: str) -> str:
    """`text` with every full card number (13-19 digits passing Luhn) masked down to its last
    four digits; separators are kept: "4111 1111 1111 1111" -> "**** **** **** 1111"."""
    pieces, last = [], 0
    for card in _card_numbers(text, reference=datetime.date.min):
        found = text[card.start : card.end]
        keep_from = [i for i, char in enumerate(found) if char.isdigit()][-4]
        pieces += [text[last : card.start], re.sub(r"\d", "*", found[:keep_from]), found[keep_from:]]
        last = card.end
    return "".join(pieces) + text[last:]


# ----------------------------------------------------------------------------- UK accounts

_SORT_CODE = r"(?P<sort>\d{2}[- ]\d{2}[- ]\d{2}|\d{6})"
_ACCOUNT_WORDS = r"(?:account|acc|a/c)(?:\s+(?:number|num|no\.?))?"
_SORT_AND_ACCOUNT = re.compile(
    rf"\b{_SORT_CODE}[\s,;/]+(?:{_ACCOUNT_WORDS}\s*:?\s*)?(?P<account>\d{{8}})\b", re.IGNORECASE
)  # 12-34-56 12345678
_SORT_CODE_IN_CONTEXT = re.compile(rf"\bsort[\s-]?code\W{{0,3}}(?:is\s+)?{_SORT_CODE}\b", re.IGNORECASE)
_ACCOUNT_IN_CONTEXT = re.compile(
    rf"(?<![\w/]){_ACCOUNT_WORDS}\s*(?:is\s+|:\s*|#\s*)?(?P<account>\d{{6,10}})\b", re.IGNORECASE
)
UK_ACCOUNT_DIGITS = 8


def _uk_accounts(text: str, *, reference: datetime.date) -> Iterator[Entity]:
    for match in _SORT_AND_ACCOUNT.finditer(text):
        yield _sort_code(match)
        yield Entity("account_number", match.group("account"), match.start("account"), match.end("account"))
    for match in _SORT_CODE_IN_CONTEXT.finditer(text):
        yield _sort_code(match)
    for match in _ACCOUNT_IN_CONTEXT.finditer(text):
        digits, reason = match.group("account"), None
        if len(digits) != UK_ACCOUNT_DIGITS:
            reason = f"UK account numbers have {UK_ACCOUNT_DIGITS} digits, this one {len(digits)}"
        start, end = match.start("account"), match.end("account")
        yield Entity("account_number", digits, start, end, valid=reason is None, reason=reason)


def _sort_code(match: re.Match[str]) -> Entity:
    digits = re.sub(r"\D", "", match.group("sort"))
    value = f"{digits[:2]}-{digits[2:4]}-{digits[4:]}"
    return Entity("sort_code", value, match.start("sort"), match.end("sort"))


# ----------------------------------------------------------------------------- IBANs

IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "DE": 22, "DK": 18, "ES": 24, "FI": 18, "FR": 27, "GB": 22,
    "IE": 22, "IT": 27, "LU": 20, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "SE": 24,
}  # fmt: skip
# Country, check digits, then groups of four (a space between groups is optional) and a short tail.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.IGNORECASE)


def iban_checksum_valid(iban: str) -> bool:
    """ISO 13616: the first four characters moved to the end, letters as 10..35, mod 97 is 1."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _ibans(text: str, *, reference: datetime.date) -> Iterator[Entity]:
    for match in _IBAN.finditer(text):
        start, end = match.start(), _iban_end(text, match)
        iban = re.sub(r"\s", "", text[start:end]).upper()
        reason = _iban_problem(iban)
        if iban[:2] not in IBAN_LENGTHS and reason is not None:
            continue  # an unknown country and a failing check: most likely not an IBAN at all
        yield Entity("iban", iban, start, end, valid=reason is None, reason=reason)


def _iban_end(text: str, match: re.Match[str]) -> int:
    """Where an IBAN of a known country ends: the match may have taken the next word as a group
    ("BE68 5390 0754 7034 then"); cut after the country's length when that falls between groups."""
    length = IBAN_LENGTHS.get(match.group()[:2].upper())
    if length is None:
        return match.end()
    count = 0
    for i in range(match.start(), match.end()):
        count += text[i].isalnum()
        if count == length:
            return i + 1 if i + 1 == match.end() or text[i + 1] == " " else match.end()
    return match.end()


def _iban_problem(iban: str) -> str | None:
    """Why `iban` (compact, upper case) is not valid, or None."""
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return f"{iban[:2]} IBANs have {expected} characters, this one {len(iban)}"
    if iban[2:4] in ("00", "01", "99"):
        return f"check digits {iban[2:4]} are never issued"
    if not iban_checksum_valid(iban):
        return "the ISO 13616 mod-97 checksum fails: a character is wrong or two are swapped"
    return None


# ----------------------------------------------------------------------------- all of them

Finder = Callable[..., Iterator[Entity]]
FINDERS: list[Finder] = [_ibans, _uk_accounts, _card_numbers, _card_last_four, _amounts, _dates]


def find_key_fields(text: str, *, reference: datetime.date) -> list[Entity]:
    """Every key field in `text`, non-overlapping, sorted by start. `reference`: the date that
    "today", "yesterday" and year-less dates ("3 March") are read against."""
    found = [entity for finder in FINDERS for entity in finder(text, reference=reference)]
    return non_overlapping(found)


def non_overlapping(entities: list[Entity]) -> list[Entity]:
    """The longest entities that overlap no longer one (ties: the earlier in the list), by start."""
    kept: list[Entity] = []
    for entity in sorted(entities, key=lambda e: e.start - e.end):  # stable: ties keep list order
        if all(entity.end <= k.start or k.end <= entity.start for k in kept):
            kept.append(entity)
    return sorted(kept, key=lambda e: e.start)
