"""The pre-training loop: next-token loss on packed sequences, one or many processes.

    train = PackedSequences(pack_documents(texts, tokenizer), seq_len=256)
    result = pretrain(model, train, held_out, PretrainConfig(steps=2000), run_dir="runs/embedded")
    result.history[-1]        # {"type": "eval", "step": 2000, "held_out_loss": ...}

- AdamW with warm-up then cosine decay, gradient clipping, gradient accumulation
  (`batch_size` sequences per optimiser step over all processes, `micro_batch_size` per forward).
- bfloat16 autocast on CUDA; float32 on CPU (where oneDNN's bfloat16 training path is slower).
- Auxiliary-loss-free balancing on by default: after each optimiser step every router's
  correction bias moves against its experts' load (`bias_update_rate`, 0 turns it off). Load
  statistics per layer (max/mean, coefficient of variation) are logged every `log_every` steps.
- Exact resume: `run_dir/checkpoint.pt` holds the model, optimiser, schedule, step and history,
  and the data order is a function of the step, so a resumed run repeats the uninterrupted
  run's losses.
- Under `torchrun` each process trains its rows of every global batch inside DDP; the routers'
  token counts are summed across processes so the biases stay identical.
- A tqdm bar shows loss, tokens/s and time left; `run_dir/log.jsonl` gets one JSON record per
  log, evaluation (held-out loss) and load report.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..model import MoEForCausalLM
from ..moe import moe_layers, update_expert_bias
from .data import PackedSequences
from .distributed import DistributedContext
from .optim import adamw, clip_gradients, warmup_cosine

CHECKPOINT_FILE, LOG_FILE = "checkpoint.pt", "log.jsonl"
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, batch [B, T + 1]) -> mean loss


@dataclass
class PretrainConfig:
    steps: int = 1000
    seq_len: int = 256
    batch_size: int = 16  # sequences per optimiser step, all processes together
    micro_batch_size: int = 16  # sequences per forward pass in one process
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    bias_update_rate: float = 1e-3  # DeepSeek-V3's gamma; 0 disables the bias updates
    eval_every: int = 200
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0

    def accumulation_steps(self, world_size: int) -> int:
        per_process = self.batch_size // world_size
        if self.batch_size % world_size or per_process % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} must split into {world_size} process(es) x whole "
                f"micro-batches of {self.micro_batch_size}"
            )
        return per_process // self.micro_batch_size


@dataclass
class PretrainResult:
    steps: int
    tokens_seen: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def last(self, kind: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.history) if r["type"] == kind), None)


def next_token_loss(model: nn.Module, batch_BT1: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each next token, plus the routers' balance loss when it is on."""
    logits_BTV = model(batch_BT1[:, :-1])
    loss = F.cross_entropy(logits_BTV.flatten(0, 1).float(), batch_BT1[:, 1:].flatten())
    base = model.module if isinstance(model, DistributedDataParallel) else model
    balance = base.balance_loss() if isinstance(base, MoEForCausalLM) else None
    return loss if balance is None else loss + balance


@torch.no_grad()
def held_out_loss(
    model: nn.Module,
    data: PackedSequences,
    *,
    batch_size: int = 16,
    context: DistributedContext | None = None,
) -> float:
    """Mean next-token loss (nats per token) over every window of `data`, split across processes."""
    context = context or DistributedContext()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    indices = torch.arange(len(data))[context.rank :: context.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for chunk in indices.split(batch_size):
        batch = data.sequences(chunk).to(device)
        with _autocast(device):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
        total += torch.stack([loss.double(), torch.tensor(batch[:, 1:].numel(), device=device)])
    context.all_reduce_sum(total)
    for _, layer in moe_layers(model):
        layer.tokens_per_expert.zero_()  # evaluation must not steer the bias updates
    model.train(was_training)
    return float(total[0] / total[1])


def pretrain(
    model: nn.Module,
    train: PackedSequences,
    held_out: PackedSequences | None,
    config: PretrainConfig,
    *,
    run_dir: str | Path,
    context: DistributedContext | None = None,
    loss_fn: LossFn = next_token_loss,
    progress: bool = True,
    resume: bool = True,
) -> PretrainResult:
    """Trains `model` in place for `config.steps` optimiser steps (continuing a checkpoint in
    `run_dir` when `resume`); returns the steps, tokens seen and the logged history."""
    context = context or DistributedContext.from_environment()
    if train.seq_len != config.seq_len:
        raise ValueError(f"train data has seq_len {train.seq_len}; the config says {config.seq_len}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accumulation = config.accumulation_steps(context.world_size)
    model.to(context.device).train()
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    schedule = warmup_cosine(
        optimizer, warmup_steps=config.warmup_steps, total_steps=config.steps, min_ratio=config.min_lr_ratio
    )
    state = _TrainingState()
    if resume and (run_dir / CHECKPOINT_FILE).exists():
        state = _load_checkpoint(run_dir, model, optimizer, schedule, context)
    wrapped: nn.Module = model
    ddp: DistributedDataParallel | None = None
    if context.distributed:
        # Buffers stay per process: the token counts are summed by hand, the biases kept equal.
        wrapped = ddp = DistributedDataParallel(model, broadcast_buffers=False)
    layers = [layer for _, layer in moe_layers(model)]
    if config.bias_update_rate > 0 and not all(layer.gate.uses_bias for layer in layers):
        raise ValueError("bias_update_rate > 0 needs topk_method 'noaux_tc'; set it to 0 for this model")
    tokens_per_step = config.batch_size * config.seq_len
    load_window = [torch.zeros_like(layer.tokens_per_expert) for layer in layers]
    losses: list[float] = []
    bar = tqdm(
        total=config.steps,
        initial=state.step,
        unit="step",
        disable=not (progress and context.is_main),
        dynamic_ncols=True,
    )
    rows = context.rows(config.batch_size)
    while state.step < config.steps:
        started = time.perf_counter()
        local = train.batch(step=state.step, batch_size=config.batch_size, seed=config.seed, rows=rows)
        loss_sum = torch.zeros((), device=context.device)
        for i, micro in enumerate(local.split(config.micro_batch_size)):
            last = i == accumulation - 1
            sync = ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()
            with sync, _autocast(context.device):
                loss = loss_fn(wrapped, micro.to(context.device)) / accumulation
            loss.backward()
            loss_sum += loss.detach()
        grad_norm = clip_gradients(model.parameters(), config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        _balance(layers, load_window, config.bias_update_rate, context, model)
        losses.append(float(context.all_reduce_sum(loss_sum) / context.world_size))
        state.step += 1
        state.tokens_seen += tokens_per_step
        state.train_seconds += time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{state.tokens_seen / state.train_seconds:,.0f}")
        finished = state.step == config.steps
        if state.step % config.log_every == 0 or finished:
            record = {
                "type": "train",
                "step": state.step,
                "loss": sum(losses) / len(losses),
                "lr": schedule.get_last_lr()[0],
                "grad_norm": grad_norm,
                "tokens_seen": state.tokens_seen,
                "tokens_per_second": state.tokens_seen / state.train_seconds,
                "epoch": train.epoch_of(step=state.step, batch_size=config.batch_size),
            }
            losses.clear()
            _record(state, run_dir, context, record)
            if layers:
                _record(state, run_dir, context, _load_record(state.step, load_window))
                load_window = [torch.zeros_like(w) for w in load_window]
        if held_out is not None and (state.step % config.eval_every == 0 or finished):
            loss_value = held_out_loss(model, held_out, batch_size=config.micro_batch_size, context=context)
            _record(
                state, run_dir, context, {"type": "eval", "step": state.step, "held_out_loss": loss_value}
            )
            bar.write(f"step {state.step}: held-out loss {loss_value:.4f}")
        if state.step % config.checkpoint_every == 0 or finished:
            _save_checkpoint(run_dir, model, optimizer, schedule, state, config, context)
    bar.close()
    return PretrainResult(state.step, state.tokens_seen, state.train_seconds, list(state.history))


@dataclass
class _TrainingState:
    step: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def _balance(
    layers: list,
    load_window: list[torch.Tensor],
    rate: float,
    context: DistributedContext,
    model: nn.Module,
) -> None:
    """Sum this step's token counts over processes, add them to the log window, update biases."""
    for layer, window in zip(layers, load_window, strict=True):
        context.all_reduce_sum(layer.tokens_per_expert)
        window += layer.tokens_per_expert
    if rate > 0:
        update_expert_bias(model, rate=rate)  # also resets the counts
    else:
        for layer in layers:
            layer.tokens_per_expert.zero_()


def _load_record(step: int, load_window: list[torch.Tensor]) -> dict[str, Any]:
    per_layer = []
    for load_E in load_window:
        mean = load_E.mean().item()
        per_layer.append(
            {
                "max_over_mean": load_E.max().item() / mean if mean else 0.0,
                "cv": load_E.std(unbiased=False).item() / mean if mean else 0.0,
            }
        )
    return {
        "type": "load",
        "step": step,
        "max_over_mean": max(layer["max_over_mean"] for layer in per_layer),
        "mean_max_over_mean": sum(layer["max_over_mean"] for layer in per_layer) / len(per_layer),
        "layers": per_layer,
    }


def _record(state: _TrainingState, run_dir: Path, context: DistributedContext, record: dict) -> None:
    state.history.append(record)
    if context.is_main:
        with open(run_dir / LOG_FILE, "a") as log:
            log.write(json.dumps(record) + "\n")


def _save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    state: _TrainingState,
    config: PretrainConfig,
    context: DistributedContext,
) -> None:
    if context.is_main:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "step": state.step,
            "tokens_seen": state.tokens_seen,
            "train_seconds": state.train_seconds,
            "history": state.history,
            "config": asdict(config),
            "rng": torch.get_rng_state(),
        }
        partial = run_dir / (CHECKPOINT_FILE + ".partial")
        torch.save(payload, partial)
        partial.replace(run_dir / CHECKPOINT_FILE)  # never leaves a half-written checkpoint
    context.barrier()


def _load_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    context: DistributedContext,
) -> _TrainingState:
    payload = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise ValueError(f"{run_dir / CHECKPOINT_FILE} does not fit this model: {error}") from error
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    torch.set_rng_state(payload["rng"])
    state = _TrainingState(
        payload["step"], payload["tokens_seen"], payload["train_seconds"], payload["history"]
    )
    if context.is_main:  # the log restarts from what the checkpoint knows
        lines = "".join(json.dumps(record) + "\n" for record in state.history)
        (run_dir / LOG_FILE).write_text(lines)
    return state


def unigram_loss(train_tokens: torch.Tensor, held_out_tokens: torch.Tensor, *, vocab_size: int) -> float:
    """Held-out loss (nats per token) of a unigram model fit on the training tokens (add-one
    smoothing): the floor any language model has to beat."""
    counts = torch.bincount(train_tokens.long(), minlength=vocab_size).double() + 1.0
    log_probs = (counts / counts.sum()).log()
    return float(-log_probs[held_out_tokens.long()].mean())
