"""Training: the pre-training loop of the embedded default model and the adapter-training loop.

    from core_model.train import PretrainConfig, train_base, train_adapter, AdapterRegistry
    train_base("embedded", config=PretrainConfig(steps=2500), run_dir="runs/embedded")
    result = train_adapter(load_model("embedded"), tokenizer, task="sequence-classification",
                           train=train, dev=dev, out_dir="adapters/intents")

Modules: `pretrain` (the loop), `data` (packed sequences), `corpus` (the suite's pre-training
text), `base` (corpus -> trained, exported base model), `distributed` (torchrun), `optim`
(AdamW, schedule, clipping), `lora`, `examples`, `metrics`, `adapters` (the adapter loop),
`registry` (adapters on disk), `compress` (expert pruning, distillation), `model_card`.
"""

from .adapters import (
    AdapterResult,
    AdapterTrainingConfig,
    TaskModel,
    adapter_state,
    build_task_model,
    evaluate_examples,
    fine_tune,
    load_adapter_state,
    load_task_model,
    save_task_model,
    train_adapter,
)
from .base import train_base
from .compress import distil, measure_expert_load, prune_experts
from .examples import read_examples
from .lora import DEFAULT_TARGETS, LoRALinear, inject_lora, lora_weights, merge_lora
from .pretrain import PretrainConfig, PretrainResult, held_out_loss, pretrain
from .registry import AdapterInfo, AdapterRegistry

__all__ = [
    "DEFAULT_TARGETS",
    "AdapterInfo",
    "AdapterRegistry",
    "AdapterResult",
    "AdapterTrainingConfig",
    "LoRALinear",
    "PretrainConfig",
    "PretrainResult",
    "TaskModel",
    "adapter_state",
    "build_task_model",
    "distil",
    "evaluate_examples",
    "fine_tune",
    "held_out_loss",
    "inject_lora",
    "load_adapter_state",
    "load_task_model",
    "lora_weights",
    "measure_expert_load",
    "merge_lora",
    "pretrain",
    "prune_experts",
    "read_examples",
    "save_task_model",
    "train_adapter",
    "train_base",
]
