"""Key-field validators: IBANs (built here with their own checksum), Luhn and card masking, dates
against a reference day, amounts with currencies, UK accounts, and overlaps resolved.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/apps/customer_service/test_validators.py -q
"""

import datetime

import pytest

from apps.customer_service.validators import (
    IBAN_LENGTHS,
    Entity,
    find_key_fields,
    luhn_valid,
    mask_card_numbers,
    non_overlapping,
)

REFERENCE = datetime.date(2024, 3, 12)  # a Tuesday


def fields(text: str, kind: str | None = None) -> list[Entity]:
    found = find_key_fields(text, reference=REFERENCE)
    return [e for e in found if kind is None or e.entity == kind]


def only(text: str, kind: str) -> Entity:
    (entity,) = fields(text, kind)
    return entity


def make_iban(country: str, bban: str) -> str:
    """An IBAN with correct check digits, computed as ISO 13616 says (independently of the module)."""
    digits = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


# ----------------------------------------------------------------------------- IBANs


def test_the_well_known_gb_example_is_valid_and_compacted():
    iban = only("Please pay GB82 WEST 1234 5698 7654 32 today", "iban")
    assert (iban.value, iban.valid, iban.reason) == ("GB82WEST12345698765432", True, None)
    assert (iban.start, iban.end) == (11, 38)


@pytest.mark.parametrize("country", sorted(IBAN_LENGTHS))
def test_an_iban_built_with_its_checksum_is_valid(country):
    bban = ("1234567890" * 3)[: IBAN_LENGTHS[country] - 4]
    iban = make_iban(country, bban)
    assert only(f"my IBAN is {iban}.", "iban").valid


def test_an_iban_is_found_in_lower_case_without_spaces():
    assert only("iban gb82west12345698765432 thanks", "iban").value == "GB82WEST12345698765432"


def test_an_iban_with_a_bad_checksum_is_returned_invalid_with_a_reason():
    iban = only("GB82 WEST 1234 5698 7654 23", "iban")  # the last two digits swapped
    assert iban.valid is False and "mod-97" in iban.reason


def test_an_iban_of_the_wrong_length_for_its_country_is_invalid():
    iban = only(make_iban("DE", "1234567890123456789"), "iban")  # DE needs 18 BBAN characters
    assert iban.valid is False and iban.reason == "DE IBANs have 22 characters, this one 23"


def test_a_spaced_iban_stops_at_its_countrys_length_before_the_next_word():
    iban = make_iban("BE", "539007547034")
    spaced = " ".join(iban[i : i + 4] for i in range(0, 16, 4))
    found = only(f"{spaced} then call me", "iban")
    assert (found.end, found.value, found.valid) == (len(spaced), iban, True)


def test_an_unknown_country_with_a_failing_checksum_is_not_reported():
    assert fields("ref AB12 3456 7890 1234 5678") == []


# ----------------------------------------------------------------------------- cards


def test_luhn_accepts_test_card_numbers_and_rejects_a_changed_digit():
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_a_full_card_number_is_kept_as_its_last_four_only():
    card = only("my card is 4111 1111 1111 1111, is it blocked?", "card_number")
    assert card.value == "************1111" and "4111 1111 1111 1111"[:-4] not in str(card.to_dict())
    assert (card.start, card.end) == (11, 30)


def test_mask_card_numbers_keeps_separators_and_the_last_four():
    text = "cards 4111 1111 1111 1111 and 378282246310005, ref 4111111111111112"
    assert mask_card_numbers(text) == "cards **** **** **** 1111 and ***********0005, ref 4111111111111112"


def test_a_number_failing_luhn_is_not_a_card_number():
    assert fields("order 4111 1111 1111 1112", "card_number") == []


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("the card ending in 1234 was declined", "1234"),
        ("I lost my card yesterday, the one ending 1234", "1234"),
        ("last four digits 1234", "1234"),
        ("the last 4 digits are: 1234", "1234"),
        ("charged to ****1234", "****1234"),
        ("XXXX XXXX XXXX 1234", "XXXX XXXX XXXX 1234"),
    ],
)
def test_card_last_four(text, span):
    card = only(text, "card_last_four")
    assert card.value == "1234" and text[card.start : card.end] == span


def test_four_digits_after_ending_are_a_card_only_after_a_card():
    assert fields("the offer ends 2025", "card_last_four") == []


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("on 2024-02-29", "2024-02-29"),
        ("on 12/03/2024", "2024-03-12"),  # day first
        ("on 1.2.24", "2024-02-01"),
        ("on 3 March 2024", "2024-03-03"),
        ("on the 3rd of March", "2024-03-03"),  # no year: the reference's
        ("on March 3", "2024-03-03"),
        ("on Jan the 19th, 2023", "2023-01-19"),
        ("yesterday", "2024-03-11"),
        ("today", "2024-03-12"),
        ("Tomorrow", "2024-03-13"),
    ],
)
def test_dates_are_normalised_to_iso(text, iso):
    date = only(text, "date")
    assert (date.value, date.valid) == (iso, True)


def test_an_impossible_date_is_flagged_invalid():
    date = only("it went out on 31/02/2024", "date")
    assert (date.value, date.valid, date.reason) == (None, False, "there is no day 31 in February 2024")


def test_a_month_above_twelve_is_flagged_invalid():
    assert only("on 12/13/2024", "date").valid is False


# ----------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("£12.50", "12.50", "GBP"),
        ("12.50 EUR", "12.50", "EUR"),
        ("$1,200", "1200.00", "USD"),
        ("20 pounds", "20.00", "GBP"),
        ("40€", "40.00", "EUR"),
        ("12,50 eur", "12.50", "EUR"),  # a decimal comma
        ("£1,250.50", "1250.50", "GBP"),
        ("50p", "0.50", "GBP"),
        ("¥500", "500", "JPY"),
    ],
)
def test_amounts_with_currencies(text, amount, currency):
    found = only(f"I was charged {text} twice", "amount_of_money")
    assert found.value == {"amount": amount, "currency": currency}
    assert found.start == len("I was charged ") and found.end == found.start + len(text)


def test_an_amount_with_more_decimals_than_its_currency_is_invalid():
    found = only("3.505 GBP", "amount_of_money")
    assert found.valid is False and found.reason == "GBP amounts have at most 2 decimal places"


def test_a_time_is_not_an_amount_in_pence():
    assert fields("call me at 5 p.m.") == []


# ----------------------------------------------------------------------------- UK accounts


def test_sort_code_and_account_number_side_by_side():
    found = fields("pay 12-34-56 12345678 please")
    assert [(e.entity, e.value) for e in found] == [("sort_code", "12-34-56"), ("account_number", "12345678")]


def test_sort_code_and_account_number_named_in_the_text():
    found = fields("sort code 123456, account number 87654321")
    assert [(e.entity, e.value) for e in found] == [("sort_code", "12-34-56"), ("account_number", "87654321")]


def test_an_account_number_without_eight_digits_is_invalid():
    found = only("my account no. 1234567", "account_number")
    assert found.valid is False and "8 digits" in found.reason


# ----------------------------------------------------------------------------- all together


def test_fields_come_sorted_by_start_with_the_validator_as_extractor():
    found = fields("Send £20 to GB82 WEST 1234 5698 7654 32 tomorrow")
    assert [e.entity for e in found] == ["amount_of_money", "iban", "date"]
    assert {e.extractor for e in found} == {"validator"}


def test_an_iban_wins_over_a_card_number_inside_it():
    # Digits chosen so that the IBAN's account part is itself a Luhn-valid 14-digit "card".
    digits = next(d for d in (f"1234569876543{i}" for i in range(10)) if luhn_valid(d))
    iban = make_iban("GB", "WEST" + digits)
    spaced = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert [e.entity for e in fields(spaced[len("GBkk WEST ") :])] == ["card_number"]  # alone: a card
    assert [(e.entity, e.value) for e in fields(spaced)] == [("iban", iban)]


def test_overlaps_keep_the_longest_then_the_earliest_listed():
    long, short, tie = Entity("a", 1, 0, 10), Entity("b", 2, 5, 8), Entity("c", 3, 10, 14)
    rival = Entity("d", 4, 12, 16)  # as long as `tie`, listed after it
    assert non_overlapping([short, tie, rival, long]) == [long, tie]


def test_entity_dict_has_the_api_fields():
    keys = Entity("date", "2024-03-12", 0, 5).to_dict().keys()
    assert list(keys) == ["entity", "value", "start", "end", "confidence", "extractor", "valid", "reason"]
