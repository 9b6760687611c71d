import pytest
import torch

from core_model import MoEConfig, MoEForCausalLM
from core_model.packing import Packing


@pytest.fixture(scope="module")
def model():
    model = MoEForCausalLM(MoEConfig.preset("tiny"))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def _batch(lengths, *, left=False, T=None):
    T = T or max(lengths)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 500, (len(lengths), T), generator=generator)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, T - n :] = 1 if left else 0
        mask[row, :n] = 0 if left else 1
    return ids * mask, mask


def test_packing_lays_sequences_end_to_end_and_back():
    ids, mask = _batch([5, 2, 7, 1], T=7)
    packing = Packing.of(mask, width=8)
    assert packing.pays and packing.source_RW.shape == (2, 8)  # 7+1 and 5+2, longest first
    assert packing.position_ids_RW.tolist() == [[0, 1, 2, 3, 4, 5, 6, 0], [0, 1, 2, 3, 4, 0, 1, 0]]
    packed = packing.pack(ids)
    assert sorted(packed[packing.segment_RW >= 0].tolist()) == sorted(ids[mask.bool()].tolist())
    assert torch.equal(packing.unpack(packed), ids)  # padding comes back as zeros, as in ids


def test_a_batch_without_padding_does_not_pay():
    assert not Packing.of(torch.ones(3, 6, dtype=torch.long)).pays


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("left", [False, True])
def test_packed_trunk_gives_the_padded_hidden_states(model, causal, left):
    ids, mask = _batch([9, 3, 14, 6, 1], left=left)
    trunk = model.trunk
    with torch.no_grad():
        padded = trunk(inputs_embeds=model.embed_tokens(ids), attention_mask=mask, causal=causal)
        packing = Packing.of(mask, width=16)
        packed = packing.unpack(
            trunk(
                inputs_embeds=model.embed_tokens(packing.pack(ids)),
                attention_mask=packing.mask(causal=causal),
                position_ids=packing.position_ids_RW,
                causal=causal,
            )
        )
    real = mask.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-4, atol=1e-5)
    assert not packed[~real].any()
