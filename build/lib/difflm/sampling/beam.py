"""Beam search with an autoregressive LM: Diffusion-LM's FT-search baseline (a conditioned LM
decoded for its most likely sentences).

Hypotheses are ranked by their mean token log-probability, END included (length penalty 1,
as Hugging Face's `generate` ranks finished beams): a raw sum would favour the shortest
sentence. Search stops when `beams` hypotheses have ended and no live beam's mean beats the
worst of them (Hugging Face's early_stopping=False rule), or at the last position, where
every live beam ends.
"""

from __future__ import annotations

import torch

from difflm.model.autoregressive import CausalLM
from difflm.text.vocab import Vocab

#: The beam width of FT-search (Diffusion-LM's: 4); a pipeline asked for more sentences widens it to n.
BEAMS = 4


@torch.no_grad()
def beam_search(
    lm: CausalLM, n: int, *, beams: int, max_len: int, cond: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """The n best of the `beams` ended hypotheses, START w1 … END PAD… [n, max_len], best first, and
    the LM calls made (one batched call per position).

    Args:
        lm: the causal LM.
        n: hypotheses returned, n ≤ beams.
        beams: the beam width.
        max_len: L, positions per row.
        cond: the condition [P] of a conditioned LM (None: ∅).
    """
    if not 1 <= n <= beams:
        raise ValueError(
            f"beam search returns at most `beams` hypotheses: need 1 ≤ n ≤ beams, got n={n}, beams={beams}"
        )
    device = lm.pos.device
    live = torch.full((1, 1), Vocab.START_ID, dtype=torch.long, device=device)
    sums = torch.zeros(1, device=device)
    ended: list[tuple[float, list[int]]] = []  # (mean log-probability, words through END)
    calls = 0
    for i in range(1, max_len):
        logits, _ = lm(live, cond=None if cond is None else cond.expand(len(live), -1))
        calls += 1
        logp = logits[:, -1].float().log_softmax(-1)
        if i == max_len - 1:  # every beam ends inside L
            logp = torch.where(torch.arange(logp.shape[1], device=device) == Vocab.END_ID, logp, float("-inf"))
        total = (sums[:, None] + logp).flatten()
        best = total.topk(min(2 * beams, int(torch.isfinite(total).sum())))
        rows, words = best.indices // logp.shape[1], best.indices % logp.shape[1]
        keep: list[tuple[float, int, int]] = []  # (sum, beam, word) of the live beams kept
        for score, row, word in zip(best.values.tolist(), rows.tolist(), words.tolist()):
            if word == Vocab.END_ID:
                ended.append((score / i, live[row].tolist() + [word]))
            elif word != Vocab.PAD_ID and len(keep) < beams:
                keep.append((score, row, word))
        ended = sorted(ended, key=lambda e: -e[0])[:beams]
        if not keep or (len(ended) >= beams and keep[0][0] / i <= ended[-1][0]):
            break
        live = torch.cat([live[[r for _, r, _ in keep]], torch.tensor([[w for _, _, w in keep]], device=device).T], 1)
        sums = torch.tensor([s for s, _, _ in keep], device=device)
    out = torch.full((n, max_len), Vocab.PAD_ID, dtype=torch.long, device=device)
    for k in range(n):  # fewer than n hypotheses ended (a tiny vocabulary): the best ones repeat
        words = ended[k % len(ended)][1]
        out[k, : len(words)] = torch.tensor(words, device=device)
    return out, calls
