"""The paged latent KV cache: fixed-size blocks of MLA latents, and the pool that hands them out.

Each cached token holds only what MLA needs to rebuild its keys and values: the normed latent
`c_kv` (kv_lora_rank values) and the rotated shared key `k_rope` (qk_rope_head_dim values), per
layer. Never per-head keys and values: for DeepSeek-V3 that is 576 values instead of 40,960.

`BlockPool` is the bookkeeping (free list, reference counts, prefix-cache hashes); `LatentCache`
is the memory. Neither knows about sequences or scheduling (see `scheduler.py`).

Legend: L layers, P slots (num_blocks * block_size), W latent width (kv_lora_rank + rope dim).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..config import MoEConfig


class LatentCache:
    """One [P, W] tensor per layer; slot p = block * block_size + offset."""

    def __init__(
        self,
        config: MoEConfig,
        *,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.width = config.kv_lora_rank + config.qk_rope_head_dim
        self.latents_LPW = torch.zeros(
            config.num_hidden_layers, num_blocks * block_size, self.width, dtype=dtype, device=device
        )

    @property
    def bytes_per_token_per_layer(self) -> int:
        return self.width * self.latents_LPW.element_size()

    @property
    def total_bytes(self) -> int:
        return self.latents_LPW.numel() * self.latents_LPW.element_size()

    def write(self, layer: int, slots_N: torch.Tensor, latent_NW: torch.Tensor) -> None:
        self.latents_LPW[layer].index_copy_(0, slots_N, latent_NW.to(self.latents_LPW.dtype))

    def read(self, layer: int, slots: torch.Tensor) -> torch.Tensor:
        """Latents at the given slots, any shape of index: [..., W]."""
        flat = torch.index_select(self.latents_LPW[layer], 0, slots.reshape(-1))
        return flat.view(*slots.shape, self.width)


class BlockPool:
    """Free blocks, reference counts, and full blocks kept for reuse by their content hash.

    A freed block that holds a full, hashed block of tokens stays findable until the pool needs
    it for something else (least recently freed first), as in vLLM's prefix caching.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self._by_hash: dict[int, int] = {}
        self._hash_of: dict[int, int] = {}
        self.hits = 0
        self.queries = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by running sequences."""
        return 1.0 - self.num_free / self.num_blocks

    def allocate(self, count: int) -> list[int] | None:
        """`count` blocks, or None (and nothing taken) when the pool has fewer free."""
        if count > len(self._free):
            return None
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)  # least recently freed
            self._forget(block)
            self.ref_counts[block] = 1
            blocks.append(block)
        return blocks

    def free(self, blocks: list[int]) -> None:
        for block in reversed(blocks):  # a sequence's tail is the least likely to be shared
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self._free[block] = None

    def lookup(self, block_hash: int) -> int | None:
        """A cached block with this content, now held by the caller; None on a miss."""
        self.queries += 1
        block = self._by_hash.get(block_hash)
        if block is None:
            return None
        self.hits += 1
        if self.ref_counts[block] == 0:
            del self._free[block]
        self.ref_counts[block] += 1
        return block

    def register(self, block: int, block_hash: int) -> None:
        """Marks a full block as holding the tokens that `block_hash` names."""
        if block_hash not in self._by_hash and block not in self._hash_of:
            self._by_hash[block_hash] = block
            self._hash_of[block] = block_hash

    def _forget(self, block: int) -> None:
        block_hash = self._hash_of.pop(block, None)
        if block_hash is not None:
            del self._by_hash[block_hash]


def extend_block_hashes(
    hashes: list[int], token_ids: list[int], *, block_size: int, adapter_key: str | None
) -> list[int]:
    """Appends the hash of every full block of `token_ids` not yet in `hashes`; returns `hashes`.

    Hashes are chained, so a block's hash names every token before it too; the adapter's content
    hash (not its name) is part of the key, since the same tokens under another adapter have
    other latents.
    """
    parent = hashes[-1] if hashes else hash(("latent-cache", adapter_key))
    for start in range(len(hashes) * block_size, len(token_ids) - block_size + 1, block_size):
        parent = hash((parent, tuple(token_ids[start : start + block_size])))
        hashes.append(parent)
    return hashes
