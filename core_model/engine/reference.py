"""The simple reference the engine is tested against: greedy generation with no cache at all.

Every step runs the whole sequence through `model.forward` again. Slow on purpose and obviously
right; `Engine.generate` must give the same tokens.
"""

from __future__ import annotations

import torch

from ..model import MoEForCausalLM


@torch.inference_mode()
def naive_generate(
    model: MoEForCausalLM, prompt_ids: list[int], *, max_new_tokens: int, eos_token_id: int | None = None
) -> list[int]:
    """Greedy continuation of one prompt: the new token ids (eos included if it came)."""
    device = model.embed_tokens.weight.device
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        logits_V = model(torch.tensor([ids], device=device))[0, -1]
        ids.append(int(logits_V.argmax()))
        if ids[-1] == eos_token_id:
            break
    return ids[len(prompt_ids) :]
