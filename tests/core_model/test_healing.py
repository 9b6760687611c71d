"""Token healing on the embedded tokenizer: a prompt cut mid-word is backed up by its last token.

.venv/bin/python -m pytest tests/core_model/test_healing.py -q
"""

from core_model import load_tokenizer
from core_model.healing import heal

TOKENIZER = load_tokenizer("embedded")


def test_a_prompt_cut_mid_word_is_backed_up_to_a_token_the_word_can_start_with():
    ids = TOKENIZER.encode("def f(x):\n    retur", add_bos=True)  # ... "\n   ", " re", "tur"
    healed = heal(TOKENIZER, ids)
    assert healed.healed_text == " retur" and healed.ids == ids[:-2]  # both pieces of the word
    allowed = {TOKENIZER.decode([i]) for i in healed.first_token_ids}
    assert " return" in allowed and all(text.startswith(" retur") for text in allowed)
    whole_word = TOKENIZER.encode("def f(x):\n    return", add_bos=True)
    assert (
        whole_word[: len(healed.ids)] == healed.ids and whole_word[len(healed.ids)] in healed.first_token_ids
    )
    assert healed.completion_of(" return x") == "n x"


def test_healing_backs_up_one_token_when_no_token_spans_more():
    ids = TOKENIZER.encode("x = (", add_bos=True)
    healed = heal(TOKENIZER, ids)
    assert healed.ids == ids[:-1] and healed.healed_text == TOKENIZER.decode(ids[-1:])
    assert ids[-1] in healed.first_token_ids


def test_a_prompt_ending_with_a_special_token_is_left_alone():
    ids = TOKENIZER.encode(TOKENIZER.fim_prompt("", "\n"), add_bos=True)  # SPM: ends with the middle sentinel
    healed = heal(TOKENIZER, ids)
    assert healed.ids == ids and healed.healed_text == "" and healed.first_token_ids == ()
    assert healed.completion_of("abc") == "abc"
