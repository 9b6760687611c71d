"""An adapter trained here loads with PEFT on the transformers model of the same checkpoint and
gives the same logits as our LoRA-injected base.

.venv/bin/python -m pytest tests/core_model/train/test_peft_compat.py -q
"""

import json
import string

import pytest
import torch

from core_model import load_model, save_model, train_tokenizer
from core_model.train.adapters import AdapterTrainingConfig, train_adapter
from core_model.train.lora import DEFAULT_TARGETS

ATTENTION_TARGETS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "o_proj")
TEXTS = [line for line in string.__doc__.splitlines() if line.strip()] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_model(load_model("tiny"), tmp_path_factory.mktemp("base"))


def train(checkpoint, tokenizer, out_dir, targets):
    config = AdapterTrainingConfig(targets=targets, rank=4, alpha=8, lr=2e-2, epochs=1, batch_size=4)
    examples = [{"text": text} for text in TEXTS]
    return train_adapter(
        checkpoint, tokenizer, task="lm", train=examples[:8], dev=examples[8:12],
        out_dir=out_dir, config=config, progress=False,
    )  # fmt: skip


def peft_logits(checkpoint, adapter_dir, input_ids):
    from peft import PeftModel, PeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    assert isinstance(model, PeftModelForCausalLM)  # task_type CAUSAL_LM in adapter_config.json
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def check_same_logits(checkpoint, tokenizer, tmp_path, targets):
    result = train(checkpoint, tokenizer, tmp_path, targets)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(checkpoint)
    assert all(module.lora_B.weight.abs().max() > 0 for module in _lora_layers(result.model))
    input_ids = torch.tensor([tokenizer.encode(TEXTS[0], add_bos=True)[:24]])
    with torch.no_grad():
        ours = result.model(input_ids)
        base_only = load_model(checkpoint)(input_ids)
    theirs = peft_logits(checkpoint, tmp_path, input_ids)
    assert (ours - base_only).abs().max().item() > 1e-3  # the adapter changes the logits ...
    assert (ours - theirs).abs().max().item() < 1e-4  # ... and PEFT applies the same change


def _lora_layers(model):
    return [m for m in model.modules() if hasattr(m, "lora_B")]


def test_attention_adapter_gives_the_same_logits_in_peft(checkpoint, tokenizer, tmp_path):
    check_same_logits(checkpoint, tokenizer, tmp_path, ATTENTION_TARGETS)


@pytest.mark.xfail(
    reason="peft 0.21 under transformers 5 maps gate_proj/up_proj/down_proj targets of DeepSeek models "
    "onto the routed experts' fused parameters (huggingface/peft#3711, fix proposed in #3715): with "
    "lora_dropout > 0 loading fails (ParamWrapper), with 0 the dense/shared-MLP LoRA is silently dropped",
    raises=(AssertionError, ValueError),
    strict=False,
)
def test_default_targets_give_the_same_logits_in_peft(checkpoint, tokenizer, tmp_path):
    check_same_logits(checkpoint, tokenizer, tmp_path, DEFAULT_TARGETS)
