"""Continuous batching: which sequences run in the next step, with how many tokens, in which blocks.

Each step mixes the decode tokens of running sequences with chunks of prompts still being
prefilled, under a token budget; a request joins at any step and leaves the moment it finishes or
is cancelled, its blocks freed at once. When the cache runs out of blocks the most recently
admitted running sequence is preempted: its blocks are freed and it goes back to the head of the
queue, to be recomputed later (vLLM's recompute preemption). Prompts that start with blocks of
tokens already cached (same tokens, same adapter) reuse those blocks.

It does not run the model or sample: see `runner.py` and `engine.py`.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from .cache import BlockPool, extend_block_hashes


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    adapter_key: str | None = None  # the adapter's content hash, for prefix caching
    output_ids: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose latents are in the cache
    status: Status = Status.WAITING
    num_preemptions: int = 0
    block_hashes: list[int] = field(default_factory=list)  # of the full blocks computed so far
    num_registered: int = 0  # leading blocks of block_table offered to the prefix cache
    state: dict[str, Any] = field(default_factory=dict)  # the engine's per-request objects

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed


@dataclass
class ScheduledStep:
    sequences: list[tuple[Sequence, int]]  # (sequence, number of new tokens to compute)
    preempted: list[Sequence]


class Scheduler:
    def __init__(
        self,
        pool: BlockPool,
        *,
        block_size: int,
        max_batched_tokens: int,
        max_sequences: int,
        max_adapters: int = 1 << 30,
        prefix_caching: bool = True,
    ) -> None:
        self.pool = pool
        self.block_size = block_size
        self.max_batched_tokens = max_batched_tokens
        self.max_sequences = max_sequences
        self.max_adapters = max_adapters  # distinct adapters among running sequences
        self.prefix_caching = prefix_caching
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0  # since start, for metrics

    def add(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)

    def finish(self, sequence: Sequence) -> None:
        """Frees the sequence's blocks now, whether it finished or was cancelled."""
        if sequence in self.running:
            self.running.remove(sequence)
        elif sequence in self.waiting:
            self.waiting.remove(sequence)
        self.pool.free(sequence.block_table)
        sequence.block_table = []
        sequence.status = Status.FINISHED

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledStep:
        budget = self.max_batched_tokens
        scheduled: list[tuple[Sequence, int]] = []
        preempted: list[Sequence] = []
        for sequence in list(self.running):  # oldest first: they keep their blocks
            if sequence.status is not Status.RUNNING:
                continue  # preempted earlier in this loop
            count = min(sequence.num_uncomputed, budget)
            if count == 0:
                continue
            while not self._grow(sequence, count):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim)
                if victim is sequence:
                    break
            if sequence.status is Status.RUNNING:
                scheduled.append((sequence, count))
                budget -= count
        adapters = {s.adapter_key for s in self.running if s.adapter_key is not None}
        while self.waiting and budget > 0 and len(self.running) < self.max_sequences and not preempted:
            sequence = self.waiting[0]
            key = sequence.adapter_key
            if key is not None and key not in adapters and len(adapters) >= self.max_adapters:
                break  # its adapter would not fit beside the running ones
            if not sequence.block_table and self.prefix_caching:
                self._reuse_cached_prefix(sequence)
            count = min(sequence.num_uncomputed, budget)
            if not self._grow(sequence, count):
                break
            self.waiting.popleft()
            if key is not None:
                adapters.add(key)
            sequence.status = Status.RUNNING
            self.running.append(sequence)
            scheduled.append((sequence, count))
            budget -= count
        return ScheduledStep(scheduled, preempted)

    def computed(self, sequence: Sequence, count: int) -> None:
        """After the step: `count` more tokens of the sequence are in the cache."""
        sequence.num_computed += count
        if not self.prefix_caching:
            return
        full = sequence.num_computed // self.block_size
        extend_block_hashes(
            sequence.block_hashes,
            sequence.token_ids[: full * self.block_size],
            block_size=self.block_size,
            adapter_key=sequence.adapter_key,
        )
        for i in range(sequence.num_registered, full):
            self.pool.register(sequence.block_table[i], sequence.block_hashes[i])
        sequence.num_registered = full

    def slots(self, sequence: Sequence, length: int) -> torch.Tensor:
        """Cache slots of positions 0 .. length - 1 of the sequence."""
        positions = torch.arange(length)
        blocks = torch.tensor(sequence.block_table)
        return blocks[positions // self.block_size] * self.block_size + positions % self.block_size

    def _grow(self, sequence: Sequence, count: int) -> bool:
        needed = math.ceil((sequence.num_computed + count) / self.block_size) - len(sequence.block_table)
        if needed <= 0:
            return True
        blocks = self.pool.allocate(needed)
        if blocks is None:
            return False
        sequence.block_table += blocks
        return True

    def _preempt(self, sequence: Sequence) -> None:
        self.running.remove(sequence)
        self.pool.free(sequence.block_table)
        sequence.block_table = []
        sequence.num_computed = sequence.num_registered = 0
        sequence.num_preemptions += 1
        self.num_preemptions += 1
        sequence.status = Status.WAITING
        self.waiting.appendleft(sequence)

    def _reuse_cached_prefix(self, sequence: Sequence) -> None:
        """Takes cached blocks for the leading full blocks; at least one token is left to compute."""
        hashes = extend_block_hashes(
            sequence.block_hashes,
            sequence.token_ids[: sequence.num_tokens - 1],
            block_size=self.block_size,
            adapter_key=sequence.adapter_key,
        )
        for block_hash in hashes:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            sequence.block_table.append(block)
        reused = len(sequence.block_table)
        sequence.num_registered = reused
        sequence.num_computed = reused * self.block_size
