"""A linear-chain CRF over a tagger's word scores (Lafferty et al. 2001; the tagging layer of
Lample et al. 2016): a learned score for each pair of consecutive tags, for the first tag and
for the last, added to the word scores. The model is trained on the whole sentence's tag
sequence (`negative_log_likelihood`) and decoded as a whole (`viterbi`), so a tag that rarely
follows another (B-X then B-X: two mentions side by side) costs what the data says it costs.

    nll_B = negative_log_likelihood(scores_BWL, tags_BW, mask_BW, transitions)
    path = viterbi(scores_WL, transitions)            # the best tag ids of one sentence
    probs_WL = marginals(scores_WL, transitions)     # each word's tag probabilities

`Transitions` holds the three score tensors; a score of `BLOCKED` forbids a pair outright (a BIO
tag set's I-X after anything but B-X or I-X: see tagging.bio_transitions).

Legend: B batch, W words, L labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCKED = -1e4  # the score of a forbidden transition: finite, so sums of scores stay finite


@dataclass(frozen=True)
class Transitions:
    """Scores of tag pairs [previous, next], of the first tag and of the last tag."""

    pairs_LL: torch.Tensor
    start_L: torch.Tensor
    end_L: torch.Tensor

    def to(self, device: torch.device | str) -> Transitions:
        """Detached float32 copies on `device`."""
        return Transitions(*(t.detach().float().to(device) for t in self.tensors()))

    def plus(self, other: Transitions) -> Transitions:
        """Element-wise sum (learned scores plus fixed constraints)."""
        return Transitions(*(a + b for a, b in zip(self.tensors(), other.tensors(), strict=True)))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pairs_LL, self.start_L, self.end_L


def sentence_scores(
    scores_BTL: torch.Tensor, labels_BT: torch.Tensor, *, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The labelled positions of each row moved to its front, in order: scores [B, W, L], tags
    [B, W] (0 where there is no word) and mask [B, W]; W is the most labelled positions in a row."""
    keep_BT = labels_BT != ignore_index
    counts_B = keep_BT.sum(1)
    W = int(counts_B.max()) if counts_B.numel() else 0
    order_BW = torch.sort((~keep_BT).to(torch.int8), dim=1, stable=True).indices[:, :W]
    mask_BW = torch.arange(W, device=labels_BT.device)[None, :] < counts_B[:, None]
    scores_BWL = scores_BTL.gather(1, order_BW[..., None].expand(-1, -1, scores_BTL.shape[-1]))
    tags_BW = labels_BT.gather(1, order_BW).masked_fill(~mask_BW, 0)
    return scores_BWL, tags_BW, mask_BW


def negative_log_likelihood(
    scores_BWL: torch.Tensor, tags_BW: torch.Tensor, mask_BW: torch.Tensor, transitions: Transitions
) -> torch.Tensor:
    """-log p(tags | scores) per row [B] (0 for a row without words). Each row's words are at its
    front (`mask_BW` true there), as `sentence_scores` lays them out."""
    B, W, _ = scores_BWL.shape
    if W == 0:
        return scores_BWL.new_zeros(B)
    pairs, start, end = transitions.pairs_LL, transitions.start_L, transitions.end_L
    lengths_B = mask_BW.sum(1)
    maskf_BW = mask_BW.to(scores_BWL.dtype)
    word_BW = scores_BWL.gather(2, tags_BW[..., None]).squeeze(2) * maskf_BW
    pair_BW = pairs[tags_BW[:, :-1], tags_BW[:, 1:]] * maskf_BW[:, 1:]
    last_B = tags_BW.gather(1, (lengths_B - 1).clamp(min=0)[:, None]).squeeze(1)
    gold_B = start[tags_BW[:, 0]] + word_BW.sum(1) + pair_BW.sum(1) + end[last_B]
    alpha_BL = start + scores_BWL[:, 0]
    for w in range(1, W):
        step_BL = torch.logsumexp(alpha_BL[:, :, None] + pairs, dim=1) + scores_BWL[:, w]
        alpha_BL = torch.where(mask_BW[:, w, None], step_BL, alpha_BL)
    log_partition_B = torch.logsumexp(alpha_BL + end, dim=1)
    return (log_partition_B - gold_B) * (lengths_B > 0)


def viterbi(scores_WL: torch.Tensor, transitions: Transitions) -> list[int]:
    """The best-scoring tag ids of one sentence."""
    W = scores_WL.shape[0]
    if W == 0:
        return []
    score_L = transitions.start_L + scores_WL[0]
    back = []
    for w in range(1, W):
        best_L, previous_L = (score_L[:, None] + transitions.pairs_LL).max(0)
        score_L = best_L + scores_WL[w]
        back.append(previous_L)
    path = [int((score_L + transitions.end_L).argmax())]
    for previous_L in reversed(back):
        path.append(int(previous_L[path[-1]]))
    return path[::-1]


def marginals(scores_WL: torch.Tensor, transitions: Transitions) -> torch.Tensor:
    """p(word w has tag l | the sentence) [W, L], by the forward-backward algorithm."""
    W, L = scores_WL.shape
    if W == 0:
        return scores_WL.new_zeros(0, L)
    pairs = transitions.pairs_LL
    alpha = [transitions.start_L + scores_WL[0]]
    for w in range(1, W):
        alpha.append(torch.logsumexp(alpha[-1][:, None] + pairs, dim=0) + scores_WL[w])
    beta = [transitions.end_L]
    for w in range(W - 1, 0, -1):
        beta.append(torch.logsumexp(pairs + (scores_WL[w] + beta[-1])[None, :], dim=1))
    joint_WL = torch.stack(alpha) + torch.stack(beta[::-1])
    return (joint_WL - torch.logsumexp(joint_WL, dim=1, keepdim=True)).exp()
