"""Masked diffusion (MDLM): the forward process, the NELBO, the samplers with an oracle
denoiser on a toy distribution, and a tiny run through the pipeline and the CLI."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch

from difflm.diffusion.masking import mask_rows, reveal_prob, visible_share
from difflm.model.tokens import TokenDenoiser
from difflm.objectives import Batch
from difflm.objectives.masked import masked_loss
from difflm.sampling.masked import MASKED_SAMPLERS, gibbs_updates
from difflm.sampling.uniform import UNIFORM_SAMPLERS
from difflm.text.vocab import Vocab
from tests.conftest import tiny_config

torch.set_num_threads(1)
START = Vocab.START_ID
# A toy distribution over rows START a b c with words 4..6: three rows, unequal weights.
TOY = {(START, 4, 5, 6): 0.5, (START, 5, 5, 4): 0.3, (START, 6, 4, 4): 0.2}
V, MASK = 7, 7


class Oracle:
    """The exact p(x_i | visible tokens of z) of a distribution over rows START a b c (TOY unless
    given), as logits [B, L, V] (uniform where impossible), looked up from a table of every
    state of the three word positions."""

    lengths = None
    mask_id = MASK
    noise = "masked"
    noisable, noised = TokenDenoiser.noisable, TokenDenoiser.noised  # the forward process of the real model
    codes = (4, 5, 6, MASK)

    def __init__(self, dist: dict[tuple[int, ...], float] = TOY) -> None:
        self.table = torch.empty(4**3, 4, V)
        for index in range(4**3):
            row = [START, *(self.codes[index // 4**i % 4] for i in range(3))]
            fits = {x: p for x, p in dist.items() if all(v == MASK or v == w for v, w in zip(row, x))}
            probs = torch.full((4, V), 1e-12)
            for x, p in fits.items():
                for i, w in enumerate(x):
                    probs[i, w] += p / sum(fits.values())
            self.table[index] = probs.log()

    def __call__(self, z: torch.Tensor, t: object = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        code = torch.zeros_like(z[:, 0])
        for i in range(3):
            code += (z[:, i + 1] == MASK).long() * 3 * 4**i + (z[:, i + 1] - 4).clamp(0, 2) * (
                z[:, i + 1] != MASK
            ) * 4**i
        return self.table[code]


def test_forward_marginals_and_reveal_probability():
    ids = torch.tensor([[START, 4, 5, 6]] * 20000)
    maskable = ids != START
    for t in (0.1, 0.5, 0.9):
        z = mask_rows(ids, torch.full((len(ids),), t), torch.rand(ids.shape), maskable, MASK)
        share = (z[:, 1:] == MASK).float().mean().item()
        assert abs(share - (1 - float(visible_share(torch.tensor(t))))) < 0.01  # q(z_i = m) = 1 − α_t = t
        assert (z[:, 0] == START).all() and ((z == ids) | (z == MASK)).all()
    # Masked at t, still masked at s with probability 1 − (t − s)/t = s/t: the marginal at s is s.
    assert reveal_prob(0.8, 0.2) == pytest.approx(0.75) and reveal_prob(0.5, 0.0) == 1.0


def test_the_nelbo_of_the_exact_denoiser_is_the_exact_nll():
    oracle = Oracle()
    # Enumerated: Σ_M B(k, L − k + 1)·Σ_{i∈M} −log p(x_i | x_∖M) is −log p(x) for every row (any-order AR).
    for x, p in TOY.items():
        words, total = x[1:], 0.0
        for k in range(1, 4):
            weight = math.factorial(k - 1) * math.factorial(3 - k) / math.factorial(3)
            for masked in combinations(range(3), k):
                z = torch.tensor([[START, *(MASK if i in masked else w for i, w in enumerate(words))]])
                logp = oracle(z).log_softmax(-1)[0]
                total += weight * sum(-logp[i + 1, words[i]].item() for i in masked)
        assert total == pytest.approx(-math.log(p), abs=1e-6)
    # The training loss is an unbiased Monte Carlo estimate of it (per modelled token).
    x = (START, 5, 5, 4)
    config = tiny_config("grammar", "model.kind=masked")
    estimates = [
        3
        * masked_loss(oracle, Batch(torch.tensor([x] * 2048)), config, generator=torch.Generator().manual_seed(s)).loss
        for s in range(12)
    ]
    mean, spread = float(torch.stack(estimates).mean()), float(torch.stack(estimates).std()) / math.sqrt(12)
    assert abs(mean + math.log(TOY[x])) < 4 * spread + 0.01, (mean, -math.log(TOY[x]), spread)


@pytest.mark.parametrize("sampler, steps", [("ancestral", 1000), ("confidence", 3), ("gibbs", 6)])
def test_oracle_samplers_reproduce_the_toy_distribution(sampler, steps):
    """Exact when one position is revealed at a time: the confidence sampler with K = 3 steps
    (and Gibbs after it); the ancestral one as K grows (two positions revealed at the same
    step are drawn independently, which happens to about 3/K of the rows)."""
    canvas = torch.tensor([[START, MASK, MASK, MASK]] * 3000)
    tokens, calls = MASKED_SAMPLERS[sampler](
        Oracle(), canvas, mask_id=MASK, steps=steps, generator=torch.Generator().manual_seed(0)
    )
    rows = [tuple(r) for r in tokens.tolist()]
    assert sum(r not in TOY for r in rows) <= (0.01 * len(rows) if sampler == "ancestral" else 0)
    for x, p in TOY.items():
        assert abs(rows.count(x) / len(rows) - p) < 0.03, (sampler, x)
    assert calls <= steps
    few, _ = MASKED_SAMPLERS[sampler](Oracle(), canvas[:8], mask_id=MASK, steps=1000)
    assert few.shape == (8, 4)
    _, cached = MASKED_SAMPLERS["ancestral"](Oracle(), canvas[:1], mask_id=MASK, steps=1000)
    assert cached <= 3  # one row, three positions: at most three calls in a thousand steps


def test_gibbs_leaves_the_distribution_invariant():
    """Random-scan Gibbs with the exact conditionals (one of three positions a call): rows drawn
    from a distribution whose one-position conditionals are not certain (on TOY they all are,
    and the chain could not move) stay distributed as it, and never leave its support."""
    mixed = {(START, 4, 4, 4): 0.3, (START, 4, 5, 4): 0.2, (START, 5, 5, 4): 0.25, (START, 5, 5, 6): 0.25}
    generator = torch.Generator().manual_seed(0)
    draws = torch.multinomial(torch.tensor(list(mixed.values())), 8000, True, generator=generator)
    start = torch.tensor(list(mixed))[draws]
    after = gibbs_updates(Oracle(mixed), start, start != START, mask_id=MASK, calls=4, generator=generator)
    rows = [tuple(r) for r in after.tolist()]
    assert all(r in mixed for r in rows)
    for x, p in mixed.items():
        assert abs(rows.count(x) / len(rows) - p) < 0.025, x
    assert (after != start).any(1).float().mean().item() > 0.2  # the chain moves


def test_samplers_never_change_fixed_tokens_and_respect_allowed_words():
    canvas = torch.tensor([[START, MASK, 5, MASK]] * 200)
    allowed = torch.ones(4, V, dtype=torch.bool)
    allowed[3, 6] = False  # the last word may not be 6
    for sampler in MASKED_SAMPLERS:
        tokens, _ = MASKED_SAMPLERS[sampler](
            Oracle(), canvas, mask_id=MASK, steps=4, generator=torch.Generator().manual_seed(1), allowed=allowed
        )
        assert (tokens[:, 2] == 5).all() and (tokens[:, 0] == START).all() and (tokens[:, 3] != 6).all()


def test_samplers_never_write_unk_unless_a_constraint_leaves_only_it():
    logp = torch.full((4, V), -5.0)
    logp[:, Vocab.UNK_ID] = 0.0  # a network that finds <unk> the likeliest word everywhere
    logp = logp.log_softmax(-1)

    def network(z: torch.Tensor, t: object = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        return logp.expand(z.shape[0], -1, -1)

    canvas = torch.tensor([[START, MASK, MASK, MASK]] * 50)
    allowed = torch.ones(4, V, dtype=torch.bool)
    allowed[2] = False
    allowed[2, Vocab.UNK_ID] = True  # an unknown word given at position 2
    for name, sampler in [*MASKED_SAMPLERS.items(), *UNIFORM_SAMPLERS.items()]:
        free, _ = sampler(network, canvas, mask_id=MASK, steps=3, generator=torch.Generator().manual_seed(0))
        assert not (free == Vocab.UNK_ID).any(), name
        held, _ = sampler(
            network, canvas, mask_id=MASK, steps=3, generator=torch.Generator().manual_seed(0), allowed=allowed
        )
        assert (held[:, 2] == Vocab.UNK_ID).all() and not (held[:, [1, 3]] == Vocab.UNK_ID).any(), name
