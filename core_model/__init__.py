"""The model every vertical shares: a DeepSeek-V2/V3-family MoE, its checkpoints and tokenizer.

    from core_model import load_model, load_tokenizer
    model = load_model("tiny")                 # a preset, or a Hugging Face checkpoint directory
    logits_BTV = model(input_ids_BT, attention_mask=mask_BT)

`core_model` imports no app and nothing of `federated`.
"""

from .checkpoint import CheckpointError, load_model, save_model
from .config import ConfigError, MoEConfig
from .model import MoEForCausalLM
from .tokenizer import Tokenizer, load_tokenizer, train_tokenizer

__all__ = [
    "CheckpointError",
    "ConfigError",
    "MoEConfig",
    "MoEForCausalLM",
    "Tokenizer",
    "load_model",
    "load_tokenizer",
    "save_model",
    "train_tokenizer",
]
