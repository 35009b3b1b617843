"""Uniform-noise diffusion (UDLM): the forward process and its posterior against enumeration,
the NELBO of the exact denoiser against the exact NLL, and the sampler with that denoiser."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from difflm.diffusion.uniform import log_likelihood_of_own, nelbo_integrand, noise_rows, posterior
from difflm.model.tokens import TokenDenoiser
from difflm.objectives import Batch
from difflm.objectives.uniform import uniform_loss
from difflm.sampling.uniform import UNIFORM_SAMPLERS, psi, psi_times
from difflm.text.vocab import Vocab
from tests.conftest import tiny_config

torch.set_num_threads(1)
START = Vocab.START_ID
# The toy distribution of the masked tests: rows START a b c, words 4..6; N = 7 token ids.
TOY = {(START, 4, 5, 6): 0.5, (START, 5, 5, 4): 0.3, (START, 6, 4, 4): 0.2}
N, BLANK = 7, 7


def q_t(t: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """q(z_t | x) per position: α_t·[z = x] + (1 − α_t)/N, for t broadcasting against z."""
    alpha = 1 - t
    return alpha * (z == x) + (1 - alpha) / N


class Oracle:
    """The exact denoiser of TOY under uniform noise: x_θ at position i is p(x_i | z_t without
    position i), by enumeration over the three rows (START, never noised, is the same in all)."""

    lengths = None
    vocab_size = N
    mask_id = BLANK
    noise = "uniform"
    noisable, noised = TokenDenoiser.noisable, TokenDenoiser.noised  # the forward process of the real model
    time_mlp = True  # it reads t, as a uniform model does

    def __call__(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.tensor(list(TOY))  # [R, L]
        prior = torch.tensor(list(TOY.values()), dtype=torch.float64).log()
        logq = q_t(t.double()[:, None, None], rows[None], z[:, None]).log()  # [B, R, L]
        without_i = prior[None, :, None] + logq.sum(-1, keepdim=True) - logq  # log p(r) q(z_−i | r_−i)
        weights = without_i.softmax(1)  # [B, R, L]: p(x = r | z_−i)
        probs = torch.zeros(*z.shape, N, dtype=torch.float64)
        probs.scatter_add_(-1, rows[None].expand(len(z), -1, -1).transpose(1, 2), weights.transpose(1, 2))
        return probs.clamp_min(1e-30).log()


def test_forward_marginals():
    ids = torch.tensor([[START, 4, 5, 6]] * 40000)
    for t in (0.1, 0.5, 0.9):
        z = noise_rows(
            ids, torch.full((len(ids),), t), torch.rand(ids.shape), torch.randint(0, N, ids.shape), ids != START
        )
        assert (z[:, 0] == START).all()
        for token in range(N):
            expected = float(q_t(torch.tensor(t), torch.tensor(4), torch.tensor(token)))
            assert abs((z[:, 1] == token).float().mean().item() - expected) < 0.01, (t, token)


def test_posterior_is_bayes_rule():
    """q(z_s | z_t, x) = q(z_t | z_s)·q(z_s | x) / q(z_t | x), with the transition matrices."""
    for t, s in ((0.9, 0.5), (0.4, 0.1), (0.3, 0.0), (1.0, 0.7)):
        a_t, a_s = 1 - t, 1 - s
        step = (a_t / a_s) * torch.eye(N, dtype=torch.float64) + (1 - a_t / a_s) / N  # q(z_t = j | z_s = k)[k, j]
        for x, z_t in itertools.product(range(N), range(N)):
            q_s = a_s * torch.eye(N, dtype=torch.float64)[x] + (1 - a_s) / N
            bayes = step[:, z_t] * q_s
            bayes = bayes / bayes.sum()
            got = posterior(torch.tensor([[z_t]]), torch.eye(N, dtype=torch.float64)[x][None, None], t, s)[0, 0]
            assert torch.allclose(got, bayes, atol=1e-12)


def test_the_nelbo_of_the_exact_denoiser_is_the_exact_nll():
    """∫_0^1 E_{z_t ~ q(·|x)} Σ_i integrand dt, with E enumerated over all 7³ rows and the
    integral by Gauss–Legendre quadrature in log t, equals −log p(x) for every row of TOY;
    a wrong denoiser's bound is looser."""
    oracle = Oracle()
    states = torch.tensor([[START, *w] for w in itertools.product(range(N), repeat=3)])  # [343, 4]
    nodes, weights = np.polynomial.legendre.leggauss(160)
    low = math.log(1e-9)
    log_t = (nodes + 1) / 2 * (0 - low) + low
    for x, p in TOY.items():
        ids = torch.tensor([x] * len(states))
        exact = wrong = 0.0
        for lt, w in zip(log_t, weights * (0 - low) / 2):
            t = torch.full((len(states),), math.exp(lt), dtype=torch.float64)
            q = q_t(t[:, None], ids, states)[:, 1:].prod(-1)  # q(z | x)
            x_theta = oracle(states, t).exp()
            exact += w * math.exp(lt) * float((q * nelbo_integrand(states, ids, x_theta, t)[:, 1:].sum(-1)).sum())
            blurred = 0.9 * x_theta + 0.1 / N
            wrong += w * math.exp(lt) * float((q * nelbo_integrand(states, ids, blurred, t)[:, 1:].sum(-1)).sum())
        assert exact == pytest.approx(-math.log(p), abs=1e-6), (x, exact, -math.log(p))
        assert wrong > exact + 0.05


def test_the_training_loss_estimates_the_nelbo():
    """`uniform_loss` with the exact denoiser: an unbiased Monte Carlo estimate of −log p(x)/3."""

    class Model(Oracle):
        def __call__(self, z, t, cond=None):  # logits of float32, as a network's
            return super().__call__(z, t).float()

    x = (START, 5, 5, 4)
    config = tiny_config("grammar", "model.kind=uniform", "diffusion.uniform_loss=nelbo")
    estimates = torch.stack(
        [
            3
            * uniform_loss(
                Model(), Batch(torch.tensor([x] * 2048)), config, generator=torch.Generator().manual_seed(s)
            ).loss
            for s in range(12)
        ]
    )
    mean, spread = float(estimates.mean()), float(estimates.std()) / math.sqrt(12)
    assert abs(mean + math.log(TOY[x])) < 4 * spread + 0.02, (mean, -math.log(TOY[x]), spread)


def test_the_posterior_is_x_theta_times_the_own_token_likelihood():
    """p(x_i | z_t) ∝ p(x_i | z_t without i)·q(z_t,i | x_i): the network's softmax (what the
    posterior loss scores) and x_θ (what the sampler plugs in) are one prediction."""
    states = torch.tensor([[START, *w] for w in itertools.product(range(N), repeat=3)])
    t = torch.full((len(states),), 0.4, dtype=torch.float64)
    rows = torch.tensor(list(TOY))
    joint = torch.tensor(list(TOY.values()), dtype=torch.float64)[None] * q_t(
        t[:, None, None], rows[None], states[:, None]
    ).prod(-1)
    for i in range(1, 4):  # p(x_i = w | z) by enumeration over the rows
        exact = torch.zeros(len(states), N, dtype=torch.float64).index_add_(1, rows[:, i], joint.double())
        exact = exact / exact.sum(-1, keepdim=True)
        own = log_likelihood_of_own(states, t, N).double()
        assert torch.allclose((Oracle()(states, t) + own)[:, i].softmax(-1), exact, atol=1e-9)
    config = tiny_config("grammar", "model.kind=uniform")  # the default loss: the posterior's cross-entropy
    out = uniform_loss(Oracle(), Batch(torch.tensor([(START, 5, 5, 4)] * 256)), config, generator=torch.Generator())
    assert out.terms["loss"] == out.terms["posterior_ce"] and out.terms["nelbo"] > 0


def network(z: torch.Tensor, t: float) -> torch.Tensor:
    return Oracle()(z, torch.full((len(z),), t))


def test_the_oracle_sampler_reproduces_the_toy_distribution():
    """Exact as K grows: a step's positions change independently given z_t."""
    canvas = torch.tensor([[START, BLANK, BLANK, BLANK]] * 3000)
    tokens, calls = UNIFORM_SAMPLERS["ancestral"](
        network, canvas, mask_id=BLANK, steps=200, generator=torch.Generator().manual_seed(0)
    )
    rows = [tuple(r) for r in tokens.tolist()]
    assert calls == 200 and sum(r not in TOY for r in rows) <= 0.03 * len(rows)
    for x, p in TOY.items():
        assert abs(rows.count(x) / len(rows) - p) < 0.03, x


def test_psi_without_correction_is_ancestral_and_with_it_keeps_the_toy_support():
    canvas = torch.tensor([[START, BLANK, BLANK, BLANK]] * 3000)
    plain = psi(
        network,
        canvas[:200],
        mask_id=BLANK,
        steps=8,
        generator=torch.Generator().manual_seed(3),
        kappa=1.0,
        times=torch.linspace(1, 0, 9).tolist(),
    )
    same = UNIFORM_SAMPLERS["ancestral"](
        network, canvas[:200], mask_id=BLANK, steps=8, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(plain[0], same[0])
    # The corrector redraws all positions at once from their own conditionals, so it is not
    # exact: it sharpens towards the mode (0.59 for 0.5 at 200 steps), keeping the support
    # and the order of the rows.
    tokens, calls = psi(network, canvas, mask_id=BLANK, steps=200, generator=torch.Generator().manual_seed(0))
    rows = [tuple(r) for r in tokens.tolist()]
    assert calls == 200 and sum(r not in TOY for r in rows) <= 0.01 * len(rows)
    shares = [rows.count(x) / len(rows) for x in TOY]
    assert shares[0] > shares[1] > shares[2] and 0.5 * sum(abs(a - p) for a, p in zip(shares, TOY.values())) < 0.12


def test_psi_times_run_from_one_to_zero_through_the_plateau():
    times = psi_times(32)
    assert len(times) == 33 and times[0] == 1 and times[-1] == 0
    assert all(a >= b for a, b in zip(times, times[1:]))
    assert times.count(times[17]) >= 10 and abs(times[17] - 0.1) < 1e-6  # 30% of the steps on the plateau
    with pytest.raises(ValueError, match="times from 1 to 0"):
        psi(network, torch.tensor([[START, BLANK]]), mask_id=BLANK, steps=4, times=[1.0, 0.5, 0.0])
    for steps in range(1, 12):  # every budget ends at 0
        times = psi_times(steps)
        assert len(times) == steps + 1 and times[0] == 1 and times[-1] == 0


@pytest.mark.parametrize("sampler", sorted(UNIFORM_SAMPLERS))
def test_the_sampler_never_changes_fixed_tokens_and_respects_allowed_words(sampler):
    canvas = torch.tensor([[START, BLANK, 5, BLANK]] * 300)
    allowed = torch.ones(4, N, dtype=torch.bool)
    allowed[3, 6] = False  # the last word may not be 6
    for temperature in (1.0, 0.3, 0.0):
        tokens, _ = UNIFORM_SAMPLERS[sampler](
            network,
            canvas,
            mask_id=BLANK,
            steps=6,
            generator=torch.Generator().manual_seed(1),
            allowed=allowed,
            temperature=temperature,
        )
        assert (tokens[:, 2] == 5).all() and (tokens[:, 0] == START).all() and (tokens[:, 3] != 6).all()
        assert (tokens < N).all()
