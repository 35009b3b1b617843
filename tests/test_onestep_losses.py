"""The one/few-step objectives against closed forms: exact fields make their losses vanish
(the oracles of tests/oracles.py stand in for the network)."""

import pytest
import torch

from difflm.config import Config
from difflm.diffusion.consistency import karras_sigmas, sigma_range
from difflm.diffusion.flowmap import FlowPath, average_velocity, jump
from difflm.diffusion.paths import denoise_edm, denoise_rf, sigma_of_t, tau_of_t
from difflm.diffusion.schedules import make_schedule
from difflm.objectives import Batch, Frozen
from difflm.objectives import consistency as cm
from difflm.objectives.meanflow import average_velocity_and_derivative, meanflow_loss, meanflow_target
from difflm.objectives.shortcut import bootstrap_target, shortcut_loss
from tests.oracles import WORDS, D, L, Oracle, T, gaussian_flow_map, gaussian_point, gen, the_point, tiny_denoiser

# --- paths -----------------------------------------------------------------------------


def test_rf_and_edm_points_reach_the_network_as_the_vp_point_of_equal_snr():
    schedule = make_schedule("sqrt", T)
    seen = []

    class Recorder:
        def __init__(self):
            self.schedule = schedule

        def __call__(self, x, t, **kwargs):
            seen.append((x, t))

    fake = Recorder()
    t = torch.tensor([0.02, 0.3, 1.0], dtype=torch.float64)
    abar = schedule.alpha_bar(t).view(-1, 1, 1)
    x0, eps = torch.randn(3, L, D, dtype=torch.float64), torch.randn(3, L, D, dtype=torch.float64)
    x_vp = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    tau, sigma = tau_of_t(schedule, t), sigma_of_t(schedule, t)
    denoise_rf(fake, (1 - tau.view(-1, 1, 1)) * x0 + tau.view(-1, 1, 1) * eps, tau)
    denoise_edm(fake, x0 + sigma.view(-1, 1, 1) * eps, sigma)
    for x, t_seen in seen:
        torch.testing.assert_close(x, x_vp)
        torch.testing.assert_close(t_seen, t)


# --- shortcut --------------------------------------------------------------------------


def test_shortcut_target_of_the_exact_flow_map_is_its_own_jump():
    s0 = 0.5
    oracle = Oracle(gaussian_flow_map(s0))
    d = torch.tensor([1.0, 0.5, 0.25, 0.125])
    s = torch.tensor([1.0, 0.5, 1.0, 0.375])
    x = gaussian_point(oracle, s0, s, seed=1)
    exact = oracle(*oracle.path.to_vp(x, s), jump=d).x0
    torch.testing.assert_close(bootstrap_target(oracle, oracle.path, x, s, d, d / 2), exact, rtol=0, atol=1e-5)
    # The flow's own x̂0 (a diffusion model's) is not self-consistent across jump sizes.
    flow = Oracle(lambda o, x, s, d: gaussian_flow_map(s0)(o, x, s, torch.zeros_like(d)))
    gap = (bootstrap_target(flow, flow.path, x, s, d, d / 2) - flow(*flow.path.to_vp(x, s), jump=d).x0).abs().max()
    assert gap > 1e-2


def test_shortcut_loss_vanishes_for_the_exact_field_of_one_sentence():
    config = Config().with_overrides(["shortcut.levels=4", "shortcut.bootstrap_share=1.0"])
    ids = WORDS.repeat(16, 1)
    exact = Oracle(the_point)
    out = shortcut_loss(exact, Batch(ids), config, generator=gen(), frozen=Frozen(target=exact))
    assert out.terms["shortcut"] < 1e-10
    wrong = Oracle(lambda o, x, s, d: o.mu.double() + 0.3 * d)  # depends on the jump: not self-consistent
    assert (
        shortcut_loss(wrong, Batch(ids), config, generator=gen(), frozen=Frozen(target=wrong)).terms["shortcut"] > 1e-3
    )


# --- MeanFlow --------------------------------------------------------------------------


def test_meanflow_target_of_the_exact_average_velocity_is_itself():
    # With the marginal velocity, u = v − (s − r)·du/ds holds exactly for the exact u.
    s0 = 0.5
    oracle = Oracle(gaussian_flow_map(s0))
    s, r = torch.tensor([1.0, 0.7, 0.4]), torch.tensor([0.0, 0.2, 0.35])
    x = gaussian_point(oracle, s0, s, seed=2)
    v = average_velocity(x, oracle(*oracle.path.to_vp(x, s)).x0, s)  # r = s: the marginal velocity
    u, dudt = average_velocity_and_derivative(oracle, oracle.path, x, r, s, v)
    x_r = jump(x, oracle(*oracle.path.to_vp(x, s), jump=s - r).x0, s, r)
    torch.testing.assert_close(x_r, x - (s - r).view(-1, 1, 1) * u)  # u is the average velocity of the jump
    torch.testing.assert_close(meanflow_target(dudt, v, r, s), u, rtol=0, atol=2e-4)
    assert dudt.abs().max() > 1e-2  # the identity is not trivially u = v


def test_meanflow_loss_vanishes_for_the_exact_field_of_one_sentence():
    config = Config().with_overrides(["meanflow.jump_share=1.0"])
    ids = WORDS.repeat(16, 1)
    assert meanflow_loss(Oracle(the_point), Batch(ids), config, generator=gen()).terms["meanflow"] < 1e-8
    off = Oracle(lambda o, x, s, d: the_point(o, x, s, d) + 0.3)  # straight lines to the wrong point
    assert meanflow_loss(off, Batch(ids), config, generator=gen()).terms["meanflow"] > 1e-3


@pytest.mark.parametrize("mode", ["train", "eval"])  # eval would take the fused fast path without the guard
def test_jvp_matches_finite_differences_on_a_real_denoiser(mode):
    model = tiny_denoiser().train(mode == "train")
    path = FlowPath.of(model.schedule)
    g = gen(3)
    x, v = torch.randn(3, L, D, generator=g), torch.randn(3, L, D, generator=g)
    s, r = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.1, 0.25, 0.0])
    u, dudt = average_velocity_and_derivative(model, path, x, r, s, v)

    def u_at(h):
        x_h, s_h = x + h * v, s + h
        return average_velocity(x_h, path.predict(model, x_h, s_h, s_h - r).x0, s_h)

    with torch.no_grad():
        h = 1e-3
        finite = (u_at(h) - u_at(-h)) / (2 * h)
        torch.testing.assert_close(u, u_at(0.0))
    assert dudt.abs().max() > 1  # a real, non-trivial derivative
    torch.testing.assert_close(dudt, finite, rtol=0, atol=1e-3 * float(dudt.detach().abs().max()))
    assert u.requires_grad  # the prediction keeps its graph for the loss


# --- consistency -----------------------------------------------------------------------


def test_consistency_function_is_the_identity_at_sigma_min():
    model = tiny_denoiser("consistency").eval()
    sigma_min, sigma_max = sigma_range(model.schedule)
    assert sigma_min == pytest.approx(float(sigma_of_t(model.schedule, 1 / T)))
    x = torch.randn(2, L, D, generator=gen(4))
    with torch.no_grad():
        f, _ = cm.consistency_function(model, x, torch.full((2,), sigma_min))
        torch.testing.assert_close(f, x)
    sigmas = karras_sigmas(model.schedule, 5)
    assert sigmas[0] == pytest.approx(sigma_min) and sigmas[-1] == pytest.approx(sigma_max)
    assert bool((sigmas[1:] > sigmas[:-1]).all())


@pytest.mark.parametrize("distil", [False, True])
def test_consistency_loss_vanishes_for_the_exact_function_of_one_sentence(distil):
    config = Config().with_overrides(["consistency.num_scales=6"])
    ids = WORDS.repeat(16, 1)
    teacher = Oracle(the_point) if distil else None  # the diffusion model of one point: x̂0 = μ
    # f(x, σ) = μ + (σ_min/σ)(x − μ), the consistency function of one point, is D = μ.
    out = cm.consistency_loss(Oracle(the_point), Batch(ids), config, generator=gen(), frozen=Frozen(teacher=teacher))
    assert out.terms["consistency"] < 1e-5
    off = Oracle(lambda o, x, s, d: the_point(o, x, s, d) + 0.3)
    assert (
        cm.consistency_loss(off, Batch(ids), config, generator=gen(), frozen=Frozen(teacher=teacher)).terms[
            "consistency"
        ]
        > 1e-2
    )
