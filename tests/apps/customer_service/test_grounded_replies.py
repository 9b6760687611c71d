"""The reply adapter's grounded training examples and the figures its drafts are scored by: plain
data over the demo knowledge base, no model.

.venv/bin/python -m pytest tests/apps/customer_service/test_grounded_replies.py -q
"""

import random
import re

from apps.customer_service.evaluation_drafts import DraftCase, draft_figures
from apps.customer_service.grounded_replies import (
    BANK_NAMES,
    DEMO_BANK,
    FOLLOW_UP,
    INTENT_PASSAGES,
    PASSAGES_PER_PROMPT,
    changed,
    grounded_examples,
    grounded_reply,
    snapped_to_passages,
)
from apps.customer_service.knowledge_base import DEMO_KB, Passage, read_passages

DEMO = read_passages(DEMO_KB)


def test_every_mapped_intent_names_a_passage_of_the_demo_knowledge_base():
    ids = {p.source_id for p in DEMO}
    assert set(INTENT_PASSAGES.values()) <= ids


def test_the_reply_is_the_sentence_that_shares_the_most_words_and_cites_its_passage():
    passage = Passage(
        "fees",
        "ATM fees",
        "We never charge for cash in the UK and the EU. Abroad, other banks may add their own fee for "
        "each withdrawal from their cash machines, which the machine shows before you confirm. "
        "Statements list it.",
    )
    reply = grounded_reply("Why did a machine abroad charge me a fee for a withdrawal?", passage)
    assert reply.startswith("Abroad, other banks may add their own fee") and reply.endswith("confirm. [fees]")
    short = Passage("pin", "PIN", "The new PIN works at once. Change it at any cash machine. Never share it.")
    assert grounded_reply("does the new pin work", short) == (
        "The new PIN works at once. Change it at any cash machine. [pin]"  # short: the next one too
    )


def test_a_changed_passage_has_other_digits_another_bank_and_id_and_keeps_its_words():
    [lost] = [p for p in DEMO if p.source_id == "card-lost-stolen"]
    other = changed(lost, random.Random(3), bank="Kestrel", source_id="faq-7", titled=False)
    assert (other.source_id, other.title) == ("faq-7", "")
    assert len(digits(other.text)) == len(digits(lost.text)) and digits(other.text) != digits(lost.text)
    assert normalised(other.text) == normalised(lost.text)
    assert changed(lost, random.Random(3), bank="Kestrel", source_id="x", titled=True).title == lost.title


def test_each_example_shows_the_answering_passage_and_its_reply_copies_it_from_the_prompt():
    messages = [
        {"text": "I think my card was stolen, what now?", "label": "lost_or_stolen_card"},
        {"text": "How do I change my PIN number?", "label": "change_pin"},
        {"text": "Can I get a disposable virtual card?", "label": "get_disposable_virtual_card"},
    ]
    examples = grounded_examples(messages * 20, DEMO, follow_up_share=1 / 3, seed=1)
    assert len(examples) == 60  # 40 answered, and hand-overs for a third of all
    follow_ups, other_ids = 0, 0
    for example in examples:
        system, customer, reply = (m["content"] for m in example["messages"])
        shown = {line[1 : line.index("]")]: line for line in system.splitlines() if line.startswith("[")}
        assert len(shown) == PASSAGES_PER_PROMPT
        if reply == FOLLOW_UP:
            follow_ups += 1
            assert "virtual card" in customer
            continue
        text, source_id = re.fullmatch(r"(.*) \[([^\]]+)\]", reply).groups()
        assert text in shown[source_id]  # copied from the changed passage in the prompt
        [gold] = [p for p in DEMO if p.source_id == INTENT_PASSAGES[message_label(customer)]]
        assert normalised(text) in normalised(gold.text)
        other_ids += source_id != gold.source_id
    assert follow_ups == 20
    assert 0 < other_ids < 40  # some prompts keep the demo's ids, some get others


def message_label(text: str) -> str:
    return "lost_or_stolen_card" if "stolen" in text else "change_pin"


def digits(text: str) -> list[str]:
    return re.findall(r"\d", text)


def normalised(text: str) -> str:
    """Digits as 0 and any bank's name as the demo's: what `changed` leaves alone."""
    for bank in BANK_NAMES:
        text = text.replace(bank, DEMO_BANK)
    return re.sub(r"\d", "0", text)


def test_draft_figures_count_citations_words_taken_from_the_passages_and_broken_text():
    passages = [
        Passage("a", "Card fees", "A new card costs 5 pounds."),
        Passage("b", "PIN", "Change it at an ATM."),
    ]
    case = DraftCase("how much is a new card", passages, "card_fee", frozenset({"a"}), passages)
    figures = draft_figures(
        [case] * 4,
        [
            "A new card costs 5 pounds. [a]",  # right, every word from the passages
            "Change it at an ATM. [b]",  # cites a shown passage, not the answer
            "A new card costs 10 pounds. [zz]",  # cites nothing shown; "10" is its own
            "Sorry \ufffd",  # no citation, broken text
        ],
    )
    assert figures["cites_shown"] == 0.5 and figures["cites_answer"] == 0.25
    assert figures["supported"] == round((1 + 1 + 4 / 5 + 0) / 4, 4)  # "10" is not in the passages
    assert figures["clean"] == 0.75
    assert figures["numbers_right"] == 0.5  # of the two drafts with numbers, one made its number up


def test_a_draft_gets_the_passages_own_sentences_digits_and_ids_where_it_nearly_copied_one():
    passages = {p.source_id: p for p in DEMO}
    shown = [passages["card-not-arrived"], passages["card-activate"]]
    draft = (
        "Cards are posted by first-class mail and usually arrive within 4 to 0 working days of ordering, "
        "or up to 09 working days for an address outside the UK. Thanks for waiting! [card-not-arived]"
    )
    assert snapped_to_passages(draft, shown) == (
        "Cards are posted by first-class mail and usually arrive within 3 to 5 working days of ordering, "
        "or up to 10 working days for an address outside the UK. Thanks for waiting! [card-not-arrived]"
    )
    # From a passage it was not shown: the knowledge base's sentence and id, not the model's digits.
    pending = "A transfer shows as pending while we run security checks, which can hold it for 63 hours. [x]"
    snapped = snapped_to_passages(pending, shown, DEMO)
    assert snapped.endswith("for up to 24 hours. [transfer-pending]") and "63" not in snapped
    unlike = "You have $1,300.31 in your savings account. [kb-3]"
    assert snapped_to_passages(unlike, shown, DEMO) == unlike  # nothing close: left as written
