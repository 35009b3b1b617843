"""Forward/reverse Gaussian math: parity with diffusers, round-trips, the variational bound."""

import math

import pytest
import torch

from difflm.diffusion import process as P
from difflm.diffusion.schedules import make_schedule

diffusers = pytest.importorskip("diffusers")

T = 50
SCHEDULE = make_schedule("sqrt", T)


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_q_sample():
    x0, eps = _randn(2, 3, 4), _randn(2, 3, 4, seed=1)
    abar = SCHEDULE.alphas_cumprod[[3, 40]].view(2, 1, 1)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, trained_betas=SCHEDULE.betas.numpy())
    expected = ref.add_noise(x0.float(), eps.float(), torch.tensor([3, 40]))
    torch.testing.assert_close(P.q_sample(x0, abar, eps).float(), expected)


@pytest.mark.parametrize("kind", ["x0", "eps", "v"])
def test_parameterizations_round_trip(kind):
    x0, eps = _randn(2, 3, 4), _randn(2, 3, 4, seed=1)
    for abar in (SCHEDULE.alphas_cumprod[[0, 30]].view(2, 1, 1), 0.37):
        x_t = P.q_sample(x0, abar, eps)
        out = P.from_x0(kind, x0, x_t, abar)
        torch.testing.assert_close(P.to_x0(kind, out, x_t, abar), x0)
    with pytest.raises(ValueError, match="'score'.*x0, eps, v"):
        P.to_x0("score", x0, x0, 0.5)
    with pytest.raises(ValueError, match="'score'"):
        P.from_x0("score", x0, x0, 0.5)


def test_conversions_agree_with_definitions():
    x0, eps, abar = _randn(2, 3, 4), _randn(2, 3, 4, seed=1), 0.3
    x_t = P.q_sample(x0, abar, eps)
    torch.testing.assert_close(P.eps_from_x0(x0, x_t, abar), eps)
    torch.testing.assert_close(P.x0_from_eps(eps, x_t, abar), x0)
    v = abar**0.5 * eps - (1 - abar) ** 0.5 * x0
    torch.testing.assert_close(P.v_from_x0(x0, x_t, abar), v)
    torch.testing.assert_close(P.x0_from_v(v, x_t, abar), x0)
    score = P.score_from_eps(eps, abar)
    torch.testing.assert_close(score, -eps / math.sqrt(1 - abar))
    torch.testing.assert_close(P.eps_from_score(score, abar), eps)


def test_posterior_matches_diffusers_variance_and_mean():
    ref = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        trained_betas=SCHEDULE.betas.numpy(),
        prediction_type="sample",
        clip_sample=False,
        variance_type="fixed_small",
    )
    x0, x_t = _randn(1, 3, 4, dtype=torch.float32), _randn(1, 3, 4, seed=1, dtype=torch.float32)
    for i in (0, 1, 7, T - 1):
        mean, var, logvar = P.posterior(SCHEDULE, x0, x_t, i)
        torch.testing.assert_close(var, ref._get_variance(i), atol=1e-12, rtol=1e-5)
        # the deterministic part of DDPMScheduler.step is the posterior mean
        prev = ref.step(x0, i, x_t, generator=torch.Generator().manual_seed(5)).prev_sample
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(mean + (var**0.5 * noise if i > 0 else 0), prev)
        torch.testing.assert_close(logvar.exp(), var if i > 0 else P.posterior(SCHEDULE, x0, x_t, 1)[1])


def test_posterior_batched_indices_and_closed_form():
    x0, x_t = _randn(3, 2, 4), _randn(3, 2, 4, seed=1)
    i = torch.tensor([0, 5, 49])
    mean, var, logvar = P.posterior(SCHEDULE.alphas_cumprod, x0, x_t, i)
    assert mean.shape == (3, 2, 4) and var.shape == (3, 1, 1)
    acp, betas = SCHEDULE.alphas_cumprod, SCHEDULE.betas
    for b, k in enumerate(i.tolist()):
        prev = acp[k - 1] if k > 0 else torch.tensor(1.0, dtype=torch.float64)
        beta_tilde = (1 - prev) / (1 - acp[k]) * betas[k]
        torch.testing.assert_close(var[b, 0, 0], beta_tilde)
        coef_x0 = prev.sqrt() * betas[k] / (1 - acp[k])
        coef_xt = (1 - betas[k]).sqrt() * (1 - prev) / (1 - acp[k])
        torch.testing.assert_close(mean[b], coef_x0 * x0[b] + coef_xt * x_t[b])
    assert var[0].item() == 0 and logvar.isfinite().all()
    # the pair version over consecutive indices is the same distribution
    m, v = P.posterior_between(x0[1:2], x_t[1:2], acp[5].item(), acp[4].item())
    torch.testing.assert_close(m, mean[1:2])
    assert v == pytest.approx(var[1].item())


def test_normal_kl():
    m1, m2 = _randn(5), _randn(5, seed=1)
    kl = P.normal_kl(m1, torch.tensor(0.3, dtype=torch.float64), m2, torch.tensor(-0.2, dtype=torch.float64))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, math.exp(0.15)), torch.distributions.Normal(m2, math.exp(-0.1))
    )
    torch.testing.assert_close(kl, ref)
    assert torch.all(P.normal_kl(m1, 0.0, m1, 0.0) == 0)


def test_prior_kl_small_for_long_schedule():
    x0 = _randn(2, 3, 4)
    kl = P.prior_kl(x0, SCHEDULE)
    assert kl.shape == (2,) and torch.all(kl >= 0) and torch.all(kl < 0.1)


# --- variational bound ------------------------------------------------------------------

V, L, D = 7, 4, 8


@pytest.fixture
def words():
    table = _randn(V, D, seed=2, dtype=torch.float32)
    ids = torch.randint(0, V, (3, L), generator=torch.Generator().manual_seed(3))
    return table, ids, table[ids]


def test_step_kl_zero_for_oracle(words):
    table, ids, x0 = words
    terms = P.vlb_terms(
        lambda x_t, t: x0,
        x0,
        ids,
        SCHEDULE,
        rounding_logits_fn=lambda x: x @ table.t(),
        generator=torch.Generator().manual_seed(0),
    )
    assert terms.steps.shape == (3, T) and terms.indices.tolist() == list(range(T))
    torch.testing.assert_close(terms.steps[:, 1:], torch.zeros(3, T - 1))
    # the decoder term of an oracle is the normalizer of the clipped Gaussian
    _, var1, _ = P.posterior(SCHEDULE, x0, x0, 1)
    expected = 0.5 * L * D * (math.log(2 * math.pi) + math.log(var1.item()))
    torch.testing.assert_close(terms.steps[:, 0], torch.full((3,), expected), rtol=1e-5, atol=1e-3)


def test_nll_bound_oracle_beats_zero_predictor(words):
    table, ids, x0 = words
    kwargs = dict(rounding_logits_fn=lambda x: x @ table.t())
    oracle = P.vlb_terms(lambda x_t, t: x0, x0, ids, SCHEDULE, generator=torch.Generator().manual_seed(0), **kwargs)
    zero = P.vlb_terms(
        lambda x_t, t: torch.zeros_like(x_t), x0, ids, SCHEDULE, generator=torch.Generator().manual_seed(0), **kwargs
    )
    nll_oracle, nll_zero = P.nll_bound_per_token(oracle), P.nll_bound_per_token(zero)
    assert nll_oracle.shape == (3,) and torch.all(nll_oracle.isfinite()) and torch.all(nll_zero.isfinite())
    assert torch.all(nll_oracle < nll_zero)
    assert torch.all(zero.steps[:, 1:] > 0)
    expected = (oracle.prior + oracle.rounding + oracle.steps.sum(1)) / L
    torch.testing.assert_close(nll_oracle, expected)


def test_subsampled_bound_is_scaled(words):
    table, ids, x0 = words
    seen = []

    def denoise(x_t, t):
        seen.append(t)
        return torch.zeros_like(x_t)

    terms = P.vlb_terms(denoise, x0, ids, SCHEDULE, rounding_logits_fn=lambda x: x @ table.t(), indices=[3, 20, 40])
    assert terms.steps.shape == (3, 3) and len(seen) == 3
    torch.testing.assert_close(seen[1], torch.full((3,), 21 / T))  # index i is seen at t = (i+1)/T
    expected = (terms.prior + terms.rounding + terms.steps.sum(1) * T / 3) / L
    torch.testing.assert_close(P.nll_bound_per_token(terms), expected)
    with pytest.raises(ValueError, match="indices"):
        P.vlb_terms(denoise, x0, ids, SCHEDULE, rounding_logits_fn=lambda x: x @ table.t(), indices=[T])
