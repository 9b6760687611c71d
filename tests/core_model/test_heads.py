# .venv/bin/python -m pytest tests/core_model/test_heads.py -q
"""Sequence and token classification heads: pooling under padding, configs, and that they learn."""

import pytest
import torch
import torch.nn.functional as F

from core_model.heads import SequenceClassificationHead, TokenClassificationHead, WordBytes
from core_model.train.examples import WORD_BYTES, spelling

D, L = 16, 3


def padded_pair(pooling):
    """The same 4 real tokens, left-padded and right-padded to 6, with garbage in the padding."""
    torch.manual_seed(0)
    real_TD = torch.randn(4, D)
    garbage_TD = torch.randn(2, D) * 100
    left_BTD = torch.cat([garbage_TD, real_TD])[None]
    right_BTD = torch.cat([real_TD, garbage_TD])[None]
    head = SequenceClassificationHead(hidden_size=D, num_labels=L, pooling=pooling)
    left = head(left_BTD, torch.tensor([[0, 0, 1, 1, 1, 1]]))
    right = head(right_BTD, torch.tensor([[1, 1, 1, 1, 0, 0]]))
    return left, right, head, real_TD


@pytest.mark.parametrize("pooling", ["last", "first", "mean"])
def test_left_and_right_padding_agree(pooling):
    left_BL, right_BL, _, _ = padded_pair(pooling)
    assert torch.allclose(left_BL, right_BL, atol=1e-5)


def test_last_pooling_reads_the_last_real_token():
    left_BL, _, head, real_TD = padded_pair("last")
    assert torch.allclose(left_BL[0], head.classifier(real_TD[-1]), atol=1e-5)


def test_mean_pooling_ignores_padding():
    _, right_BL, head, real_TD = padded_pair("mean")
    assert torch.allclose(right_BL[0], head.classifier(real_TD.mean(0)), atol=1e-5)


def test_sequence_head_shape_without_mask():
    head = SequenceClassificationHead(hidden_size=D, num_labels=L)
    assert head(torch.randn(2, 5, D)).shape == (2, L)


def test_unknown_pooling_raises():
    with pytest.raises(ValueError, match="max"):
        SequenceClassificationHead(hidden_size=D, num_labels=L, pooling="max")


def test_token_head_shape():
    head = TokenClassificationHead(hidden_size=D, num_labels=L)
    assert head(torch.randn(2, 5, D)).shape == (2, 5, L)


@pytest.mark.parametrize("cls", [SequenceClassificationHead, TokenClassificationHead])
def test_from_config_rebuilds_the_head(cls):
    head = cls(hidden_size=D, num_labels=L, dropout=0.1)
    rebuilt = cls.from_config(head.config)
    rebuilt.load_state_dict(head.state_dict())
    assert rebuilt.config == head.config
    x_BTD = torch.randn(1, 4, D)
    assert torch.equal(rebuilt.eval()(x_BTD), head.eval()(x_BTD))


def train(head, features, labels, *, steps=20):
    """Adam on cross-entropy; returns (first loss, last loss)."""
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        logits = head(features)
        loss = F.cross_entropy(logits.reshape(-1, L), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def test_sequence_head_learns_a_separable_problem():
    torch.manual_seed(0)
    labels_B = torch.arange(24) % L
    centres_LD = torch.randn(L, D) * 3
    features_BTD = torch.randn(24, 5, D) + centres_LD[labels_B][:, None]
    head = SequenceClassificationHead(hidden_size=D, num_labels=L, pooling="mean")
    first, last = train(head, features_BTD, labels_B)
    assert last < 0.5 * first


def test_token_head_learns_a_separable_problem():
    torch.manual_seed(0)
    labels_BT = torch.randint(0, L, (4, 8))
    centres_LD = torch.randn(L, D) * 3
    features_BTD = torch.randn(4, 8, D) + centres_LD[labels_BT]
    first, last = train(TokenClassificationHead(hidden_size=D, num_labels=L), features_BTD, labels_BT)
    assert last < 0.5 * first


def word_bytes(*rows: list[str | None]) -> torch.Tensor:
    """[B, T, WORD_BYTES]: each row's words at their positions (None: a position with no word)."""
    out = torch.zeros(len(rows), max(map(len, rows)), WORD_BYTES, dtype=torch.long)
    for b, row in enumerate(rows):
        for t, word in enumerate(row):
            if word is not None:
                ids = spelling(word)
                out[b, t, : len(ids)] = torch.tensor(ids)
    return out


def test_word_bytes_gives_one_vector_per_spelling_and_zeros_where_no_word_starts():
    torch.manual_seed(0)
    encoder = WordBytes(8)
    out_BTD = encoder(word_bytes(["Ataxia", None, "tumour", "x"], [None, "Ataxia", None, None]))
    assert out_BTD.shape == (2, 4, 8)
    assert torch.equal(out_BTD[0, 0], out_BTD[1, 1])  # the same word, anywhere in the batch
    assert not torch.equal(out_BTD[0, 0], out_BTD[0, 2])  # another spelling, another vector
    assert out_BTD[0, 1].abs().sum() == 0 and out_BTD[1, 0].abs().sum() == 0


def test_a_long_word_keeps_both_ends():
    word = "pseudohypoparathyroidism-associated"
    ids = spelling(word)
    assert len(ids) == WORD_BYTES
    assert bytes(i - 1 for i in ids).decode() == word[: WORD_BYTES // 2] + word[-WORD_BYTES // 2 :]
    assert spelling("é") == [0xC3 + 1, 0xA9 + 1]  # UTF-8 bytes, shifted past padding


def test_a_spelling_head_adds_to_word_first_tokens_only():
    torch.manual_seed(0)
    head = TokenClassificationHead(hidden_size=D, num_labels=L, characters=8)
    embeds_BTD = torch.randn(1, 4, D)
    moved_BTD = head.trunk_input(embeds_BTD, word_bytes(["cancer", None, "of", None]))
    changed = (moved_BTD != embeds_BTD).any(-1)[0].tolist()
    assert changed == [True, False, True, False]
    with pytest.raises(ValueError, match="word_bytes"):
        head.trunk_input(embeds_BTD, None)
    plain = TokenClassificationHead(hidden_size=D, num_labels=L)
    assert plain.trunk_input(embeds_BTD, None) is embeds_BTD


def test_a_crf_head_keeps_its_transition_scores_in_its_state():
    head = TokenClassificationHead(hidden_size=D, num_labels=L, crf=True)
    assert {"pair_scores", "start_scores", "end_scores"} <= head.state_dict().keys()
    assert head.transitions().pairs_LL.shape == (L, L)
    rebuilt = TokenClassificationHead.from_config(head.config)
    rebuilt.load_state_dict(head.state_dict())
    assert rebuilt.crf
    with pytest.raises(ValueError, match="no CRF"):
        TokenClassificationHead(hidden_size=D, num_labels=L).transitions()
