"""FUDGE: an autoregressive LM steered by future discriminators (Yang and Klein 2021, arXiv 2104.05218).

At each position i the LM proposes p(w | w_<i); a discriminator on prefixes,
log p(c | w_<i w) (trained on prefixes of the corpus's sentences, the rest of the row
masked: `train_classifier.PrefixNoise`), scores each of the LM's top-k words, and the next
word is drawn from the product, Bayes' rule over the prefix:

    p(w | w_<i, c)  ∝  p(w | w_<i) · p(c | w_<i w)                  (w among the LM's top k)

The discriminator's weight (FUDGE's λ) sits inside `discriminate` (w_c·log p). Words that
a constraint rules out at position i (`allowed`: length, infilling, a POS lexicon) never
enter the top k, so those constraints hold exactly; the last position is always END.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from difflm.model.autoregressive import CausalLM
from difflm.text.vocab import Vocab

#: FUDGE's default precondition: the discriminator scores the LM's 100 most likely words
#: (the paper's top-k for its topic task was 200; 100 keeps a CPU step cheap).
FUDGE_TOP_K = 100

Discriminator = Callable[[torch.Tensor], torch.Tensor]  # prefix rows [N, L] (future masked) -> log p(c | row) [N]


@torch.no_grad()
def fudge(
    lm: CausalLM,
    n: int,
    discriminate: Discriminator | None,
    *,
    mask_id: int,
    max_len: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_k: int = FUDGE_TOP_K,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """n rows START w1 … END PAD… [n, max_len] and the prefix rows the discriminator scored.

    Args:
        lm: the causal LM p(w | w_<i) (sampled with its key/value cache).
        discriminate: Σ_c w_c·log p(c | prefix) of rows whose positions after the prefix hold
            `mask_id`; None samples the LM within `allowed` alone.
        mask_id: the discriminator's mask token (the vocabulary size).
        max_len: L, positions per row.
        generator: drives every draw.
        temperature: of the LM's distribution (1: the LM's own).
        top_k: candidates per position that the discriminator scores.
        allowed: [L, V] bool, the words each position may take (None: any).
    """
    if temperature <= 0 or top_k < 1:
        raise ValueError(f"need temperature > 0 and top_k ≥ 1, got {temperature}, {top_k}")
    device = lm.pos.device
    ids = torch.full((n, max_len), Vocab.PAD_ID, dtype=torch.long, device=device)
    ids[:, 0] = Vocab.START_ID
    done = torch.zeros(n, dtype=torch.bool, device=device)
    cache, scored = None, 0
    for i in range(1, max_len):
        logits, cache = lm(ids[:, i - 1 : i], cache, start=i - 1)
        logp = (logits[:, -1].float() / temperature).log_softmax(-1)
        if allowed is not None:
            logp = logp.masked_fill(~allowed[i].to(device), float("-inf"))
        if i == max_len - 1:  # every row ends inside L
            logp = torch.where(torch.arange(logp.shape[1], device=device) == Vocab.END_ID, 0.0, float("-inf"))
            logp = logp.expand(n, -1)
        active = (~done).nonzero().squeeze(1)
        top = logp[active].topk(min(top_k, logp.shape[1]), dim=-1)
        score = top.values
        if discriminate is not None and i < max_len - 1:
            rows = ids[active].clone()
            rows[:, i:] = mask_id
            rows = rows.repeat_interleave(top.indices.shape[1], 0)
            rows[:, i] = top.indices.flatten()
            score = score + discriminate(rows).view_as(score).float()
            scored += len(rows)
        if not bool(torch.isfinite(score).any(-1).all()):
            raise ValueError(f"the constraints leave position {i} no word to take")
        pick = torch.multinomial(score.softmax(-1), 1, generator=generator)
        ids[active, i] = top.indices.gather(1, pick).squeeze(1)
        done |= ids[:, i] == Vocab.END_ID
        if bool(done.all()):
            break
    return ids, scored
