# .venv/bin/python -m pytest tests/core_model/test_tokenizer.py -q
"""Byte-level BPE tokenizer: round trips, special ids, chat/FIM prompts, Hugging Face compatibility."""

import json
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core_model.fim import fim_template
from core_model.tokenizer import (
    BOS,
    END_OF_TURN,
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
    SPECIAL_TOKENS,
    USER,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Sum 2 and 3."},
    {"role": "assistant", "content": "5"},
]
SAMPLE = 'def wrap(text):\n    return textwrap.fill(text, width=70)  # "done"\n'


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    corpus = [Path(module.__file__).read_text(encoding="utf-8") for module in (json, textwrap, string)]
    return train_tokenizer(corpus, vocab_size=600)


@pytest.fixture(scope="module")
def saved_dir(tok, tmp_path_factory) -> Path:
    return tok.save(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def hf_tok(saved_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.PreTrainedTokenizerFast.from_pretrained(saved_dir)


@pytest.mark.parametrize(
    "text",
    ["Hello, world!", SAMPLE, "Café naïve — 東京 🚀 ok", ""],
    ids=["ascii", "code", "non-ascii", "empty"],
)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_vocab_size_is_the_trained_size(tok):
    assert tok.vocab_size == 600


def test_special_tokens_have_the_lowest_ids_in_order(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)


def test_special_token_in_text_encodes_as_one_id(tok):
    ids = tok.encode(f"hi{USER}there")
    assert tok.token_to_id(USER) in ids
    assert tok.decode(ids) == f"hi{USER}there"


def test_add_bos_prepends_bos_id(tok):
    assert tok.encode("x", add_bos=True) == [tok.bos_id, *tok.encode("x")]


def test_save_then_from_directory_gives_same_ids(tok, saved_dir):
    assert Tokenizer.from_directory(saved_dir).encode(SAMPLE) == tok.encode(SAMPLE)


def test_chat_template_renders_roles_and_generation_prompt(tok):
    text = tok.apply_chat_template(CONVERSATION[1:2], add_generation_prompt=True)
    assert text == f"{BOS}<|user|>\nSum 2 and 3.<|end|>\n<|assistant|>\n"


def test_a_reply_generated_after_the_chat_template_stops_at_its_end_of_turn_or_eos(tok):
    assert tok.chat_stop_ids == (tok.token_to_id(END_OF_TURN), tok.eos_id)
    eos_ended = Tokenizer(
        tok.backend, chat_template="{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    )
    assert eos_ended.chat_stop_ids == (tok.eos_id,)  # the template never writes <|end|>


def test_unknown_chat_role_raises_value_error(tok):
    with pytest.raises(ValueError, match="tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_fim_prompt_puts_the_suffix_first_and_the_prefix_right_before_the_middle(tok):
    assert tok.fim_prompt("a = ", "\nprint(a)") == f"{FIM_PREFIX}{FIM_SUFFIX}\nprint(a){FIM_MIDDLE}a = "


def test_transformers_gives_same_ids(tok, hf_tok):
    assert hf_tok.encode(SAMPLE) == tok.encode(SAMPLE)


def test_transformers_gives_same_special_ids(tok, hf_tok):
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
    )


def test_transformers_renders_same_chat_text(tok, hf_tok):
    ours = tok.apply_chat_template(CONVERSATION, add_generation_prompt=True)
    theirs = hf_tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert theirs == ours


def test_from_directory_reads_foreign_config(tok, tmp_path):
    tok.backend.save(str(tmp_path / "tokenizer.json"))
    config = {"bos_token": {"content": BOS, "special": True}, "eos_token": "<|eos|>", "add_bos_token": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = Tokenizer.from_directory(tmp_path)
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.chat_template) == (0, 1, None, None)


def test_load_tokenizer_missing_directory_names_path(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint"):
        load_tokenizer(missing)


def test_load_tokenizer_preset_without_assets_names_preset():
    with pytest.raises(FileNotFoundError, match="no-such-preset"):
        load_tokenizer("no-such-preset")


def test_module_does_not_import_transformers():
    code = "import sys, core_model.tokenizer; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


class _Vocabulary:
    def __init__(self, tokens: list[str]):
        self.ids = {token: i for i, token in enumerate(tokens)}

    def token_to_id(self, token):
        return self.ids.get(token)


def test_fim_template_follows_the_tokenizers_sentinels():
    deepseek = _Vocabulary(["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜end▁of▁sentence｜>"])
    template = fim_template(deepseek)
    assert template.family == "deepseek-coder"
    assert template.prompt("a = ", "\nb") == "<｜fim▁begin｜>a = <｜fim▁hole｜>\nb<｜fim▁end｜>"
    assert template.stop_ids(deepseek) == (3, 0)  # end of sentence, then a new fill begun
    qwen = fim_template(_Vocabulary(["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>"]))
    assert qwen.family == "qwen2.5-coder"  # our sentinels' spelling, without our bos and eos: PSM
    assert qwen.prompt("a = ", "\nb") == "<|fim_prefix|>a = <|fim_suffix|>\nb<|fim_middle|>"
    codellama = fim_template(_Vocabulary(["<PRE>", "<SUF>", "<MID>", "<EOT>"]))
    assert codellama.prompt("a", "b") == "<PRE> a <SUF>b <MID>"


def test_fim_template_refuses_a_tokenizer_without_sentinels():
    with pytest.raises(ValueError, match="no fill-in-the-middle tokens"):
        fim_template(_Vocabulary(["<s>", "</s>"]))
