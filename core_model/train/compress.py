"""Make a trained model smaller: prune the least-used routed experts, or distil into a student.

    loads = measure_expert_load(model, data)             # tokens per expert, per MoE layer
    pruned = prune_experts(model, keep=8, loads=loads)   # a new model, router remapped
    student = MoEForCausalLM(smaller_config); distil(teacher, student, train, held_out, config, ...)

Pruning keeps, in every MoE layer, the `keep` experts that received the most tokens, the same
number from each expert group so group-limited routing stays valid; the router's rows, its
correction biases and the stacked expert weights are sliced to the survivors (indices
renumbered per layer). Distillation trains the student on the teacher's next-token
distribution (KL at a temperature) mixed with the usual next-token loss.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_model, save_model
from ..config import ConfigError
from ..model import MoEForCausalLM
from ..moe import moe_layers
from ..tokenizer import load_tokenizer
from .base import suite_sequences
from .data import PackedSequences
from .distributed import DistributedContext
from .pretrain import PretrainConfig, PretrainResult, held_out_loss, pretrain

REPORT_FILE = "compression.json"


@torch.no_grad()
def measure_expert_load(
    model: MoEForCausalLM, data: PackedSequences, *, max_sequences: int = 256, batch_size: int = 16
) -> dict[str, torch.Tensor]:
    """Tokens routed to each expert [E] of every MoE layer, over up to `max_sequences` windows."""
    layers = moe_layers(model)
    if not layers:
        raise ValueError("the model has no MoE layers to measure")
    was_training = model.training
    model.eval()
    for _, layer in layers:
        layer.tokens_per_expert.zero_()
    device = next(model.parameters()).device
    for chunk in torch.arange(min(len(data), max_sequences)).split(batch_size):
        model(data.sequences(chunk)[:, :-1].to(device))
    loads = {name: layer.tokens_per_expert.clone() for name, layer in layers}
    for _, layer in layers:
        layer.tokens_per_expert.zero_()
    model.train(was_training)
    return loads


@torch.no_grad()
def prune_experts(model: MoEForCausalLM, *, keep: int, loads: dict[str, torch.Tensor]) -> MoEForCausalLM:
    """A copy of `model` with `keep` routed experts per MoE layer: the most loaded of each group."""
    config = model.config
    total, groups = config.n_routed_experts, config.n_group
    if total is None:
        raise ValueError("the model has no routed experts to prune")
    if not 0 < keep < total:
        raise ValueError(
            f"keep must be between 1 and {total - 1} (the model has {total} experts); got {keep}"
        )
    if keep % groups:
        raise ValueError(f"keep ({keep}) must be a multiple of n_group ({groups}) to keep every group")
    try:
        pruned_config = config.replace(n_routed_experts=keep)
    except ConfigError as error:
        raise ValueError(f"cannot keep {keep} experts: {error}") from error
    pruned = copy.deepcopy(model)
    pruned.config = pruned_config
    per_group, group_size = keep // groups, total // groups
    for name, layer in moe_layers(pruned):
        if name not in loads:
            raise ValueError(f"no measured load for {name}")
        load_GE = loads[name].view(groups, group_size)
        best = load_GE.topk(per_group, dim=-1).indices + torch.arange(groups)[:, None] * group_size
        survivors = best.sort(dim=-1).values.flatten()
        layer.config = pruned_config
        layer.gate.config = pruned_config
        layer.gate.num_experts = keep
        layer.gate.weight = nn.Parameter(layer.gate.weight[survivors].clone())
        if layer.gate.uses_bias:
            layer.gate.e_score_correction_bias = layer.gate.e_score_correction_bias[survivors].clone()
        experts = layer.experts
        experts.num_experts = keep
        experts.gate_up_proj = nn.Parameter(experts.gate_up_proj[survivors].clone())
        experts.down_proj = nn.Parameter(experts.down_proj[survivors].clone())
        layer.tokens_per_expert = torch.zeros(keep, dtype=torch.float32, device=survivors.device)
    for module in pruned.modules():
        if getattr(module, "config", None) is config:
            module.config = pruned_config  # type: ignore[assignment]
    return pruned


def distillation_loss(teacher: nn.Module, *, temperature: float = 2.0, alpha: float = 0.5):
    """loss_fn for `pretrain`: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * next-token CE."""
    teacher.eval()

    def loss_fn(student: nn.Module, batch_BT1: torch.Tensor) -> torch.Tensor:
        inputs, targets = batch_BT1[:, :-1], batch_BT1[:, 1:]
        if alpha == 0:  # the no-teacher baseline: plain next-token loss
            return F.cross_entropy(student(inputs).float().flatten(0, 1), targets.flatten())
        with torch.no_grad():
            teacher_logits = teacher(inputs).float()
        logits = student(inputs).float()
        kl = F.kl_div(
            F.log_softmax(logits.flatten(0, 1) / temperature, dim=-1),
            F.log_softmax(teacher_logits.flatten(0, 1) / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return alpha * temperature**2 * kl + (1 - alpha) * ce

    return loss_fn


def distil(
    teacher: MoEForCausalLM,
    student: MoEForCausalLM,
    train: PackedSequences,
    held_out: PackedSequences | None,
    config: PretrainConfig,
    *,
    run_dir,
    temperature: float = 2.0,
    alpha: float = 0.5,
    progress: bool = True,
) -> PretrainResult:
    """Trains `student` (in place) on `teacher`'s logits with the pre-training loop."""
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ValueError(
            f"student vocab {student.config.vocab_size} != teacher vocab {teacher.config.vocab_size}"
        )
    context = DistributedContext.from_environment()
    teacher.requires_grad_(False).to(context.device)
    loss_fn = distillation_loss(teacher, temperature=temperature, alpha=alpha)
    return pretrain(
        student, train, held_out, config, run_dir=run_dir, context=context, loss_fn=loss_fn, progress=progress
    )


def prune_report(
    source: str | Path, *, keep: int, export_dir: str | Path, seq_len: int = 256
) -> dict[str, Any]:
    """Prune a checkpoint (or the embedded model) measured on the suite corpus; export it and
    report parameters, bfloat16 size and held-out loss before and after."""
    model, tokenizer = load_model(source, dtype=torch.float32), load_tokenizer(source)
    train, held_out = suite_sequences(tokenizer, seq_len=seq_len)
    loads = measure_expert_load(model, train)
    pruned = prune_experts(model, keep=keep, loads=loads)
    report = {
        "source": str(source),
        "method": f"expert pruning to {keep} of {model.config.n_routed_experts} routed experts per layer",
        "before": _size_and_loss(model, held_out),
        "after": _size_and_loss(pruned, held_out),
    }
    _export_compressed(pruned, tokenizer, report, export_dir)
    return report


def distil_report(
    source: str | Path,
    *,
    layers: int,
    config: PretrainConfig,
    run_dir: str | Path,
    export_dir: str | Path,
    alpha: float = 0.5,
    progress: bool = True,
) -> dict[str, Any]:
    """Distil a checkpoint into a fresh student with `layers` layers (else the same shape) on the
    suite corpus; export it and report size and held-out loss of teacher and student.
    `alpha=0` trains the same student without the teacher: the baseline distillation must beat."""
    teacher, tokenizer = load_model(source, dtype=torch.float32), load_tokenizer(source)
    if not 0 < layers < teacher.config.num_hidden_layers:
        raise ValueError(
            f"layers must be below the teacher's {teacher.config.num_hidden_layers}; got {layers}"
        )
    train, held_out = suite_sequences(tokenizer, seq_len=config.seq_len)
    student = MoEForCausalLM(teacher.config.replace(num_hidden_layers=layers))
    student.init_weights(torch.Generator().manual_seed(config.seed))
    distil(teacher, student, train, held_out, config, run_dir=run_dir, alpha=alpha, progress=progress)
    report = {
        "source": str(source),
        "method": f"distillation into a {layers}-layer student, {config.steps} steps "
        f"({alpha} x KL at T=2 + {1 - alpha} x CE)",
        "before": _size_and_loss(teacher, held_out),
        "after": _size_and_loss(student, held_out),
    }
    _export_compressed(student, tokenizer, report, export_dir)
    return report


def _size_and_loss(model: MoEForCausalLM, held_out: PackedSequences) -> dict[str, float]:
    parameters = model.num_parameters()
    return {
        "parameters": parameters,
        "active_parameters": model.config.num_parameters(active=True),
        "bf16_megabytes": round(parameters * 2 / 2**20, 2),
        "held_out_loss": round(held_out_loss(model, held_out), 4),
    }


def _export_compressed(model: MoEForCausalLM, tokenizer, report: dict[str, Any], directory) -> None:
    directory = Path(directory)
    save_model(model, directory)
    tokenizer.save(directory)
    (directory / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
