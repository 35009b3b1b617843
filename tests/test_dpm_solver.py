"""DPM-Solver++(2M): its grids, diffusers parity, oracle recovery, ODE accuracy on a Gaussian toy, hooks."""

import math

import pytest
import torch

import difflm
from difflm.diffusion.process import posterior_variance
from difflm.diffusion.schedules import make_schedule
from difflm.sampling import ddim, dpm_solver, get_sampler
from difflm.sampling.grid import respaced_indices, time_grid, trailing_indices
from tests.test_samplers import SHAPE, B, FakeDenoiser, T, gen, oracle, smooth

diffusers = pytest.importorskip("diffusers")

GRIDS = ("time", "logsnr")


# --- the grids ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sqrt", "cosine", "linear"])
@pytest.mark.parametrize("k", [1, 2, 5, T])
def test_grids_span_exactly_the_trained_noise_levels(name, k):
    schedule = make_schedule(name, T)
    first_trained = schedule.time_of(0)  # t = 1/T in the dtype the denoiser gets
    for spacing in GRIDS:
        times, abars = time_grid(schedule, k, spacing)
        assert times.shape == (k,) and times.dtype == torch.get_default_dtype() and len(abars) == k
        assert times[0] == 1.0 and (k == 1 or times[-1] == first_trained)
        assert bool((times >= first_trained).all()) and bool((times[1:] < times[:-1]).all())
        torch.testing.assert_close(
            torch.tensor(abars, dtype=torch.float64), schedule.alpha_bar(times.double()), rtol=0, atol=1e-5
        )
    times, abars = time_grid(schedule, k, "time")
    idx = respaced_indices(T, k)
    torch.testing.assert_close(times, schedule.time_of(torch.tensor(idx)), rtol=0, atol=0)
    assert abars == schedule.alphas_cumprod[idx].tolist()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 50, 2000])
def test_trailing_grid_matches_diffusers_and_ends_at_one_over_k(k):
    schedule = make_schedule("sqrt", 2000)
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=2000, trained_betas=schedule.betas.numpy(), clip_sample=False, timestep_spacing="trailing"
    )
    ref.set_timesteps(k)
    assert trailing_indices(2000, k) == ref.timesteps.tolist()
    times, abars = time_grid(schedule, k, "trailing")
    assert times[0] == 1.0 and times[-1].item() == pytest.approx(1 / k, abs=1e-3)
    assert bool((times[1:] < times[:-1]).all()) and abars == schedule.alphas_cumprod[trailing_indices(2000, k)].tolist()
    assert trailing_indices(2000, 2) == [1999, 999] and trailing_indices(10, 10) == list(range(9, -1, -1))


def test_logsnr_grid_is_uniform_in_log_snr():
    schedule = make_schedule("sqrt", 2000)
    _, abars = time_grid(schedule, 9, "logsnr")
    lam = torch.tensor(abars, dtype=torch.float64).logit()
    steps = lam.diff()
    torch.testing.assert_close(steps, steps.mean().expand(8), rtol=1e-6, atol=0)
    trained = schedule.alphas_cumprod
    torch.testing.assert_close(lam[[0, -1]], trained[[-1, 0]].logit(), rtol=0, atol=1e-9)


def test_bad_grid_or_steps_raise():
    schedule = make_schedule("sqrt", T)
    for bad in ("cosine", 3, None):
        with pytest.raises(ValueError, match="grid"):
            time_grid(schedule, 4, bad)
    for k in (0, T + 1, 2.0):
        with pytest.raises(ValueError, match="steps"):
            time_grid(schedule, k, "logsnr")


# --- the update ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 7, T])
def test_run_equals_diffusers_dpmsolver_multistep(k):
    den = FakeDenoiser(smooth)
    out = dpm_solver.sample(den, SHAPE, steps=k, generator=gen(3), grid="time", return_trajectory=True)
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T,
        trained_betas=den.schedule.betas.numpy(),
        prediction_type="sample",
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero",
    )
    ref.set_timesteps(timesteps=respaced_indices(T, k))
    g = gen(3)
    x = torch.randn(SHAPE, generator=g)
    expected = []
    for i in ref.timesteps.tolist():
        x = ref.step(smooth(x, torch.full((B,), (i + 1) / T)), i, x).prev_sample
        expected.append(x)
    assert len(out.trajectory) == k
    for ours, theirs in zip(out.trajectory, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.x0, expected[-1], rtol=1e-5, atol=1e-5)  # the last step lands on x̂0


@pytest.mark.parametrize("grid", GRIDS)
def test_two_steps_are_ddim_and_more_are_not(grid):
    den = FakeDenoiser(smooth)
    times, abars = time_grid(den.schedule, 2, grid)
    x_t, x0_hat = torch.randn(SHAPE, generator=gen(1)), torch.randn(SHAPE, generator=gen(2))
    step = dpm_solver.Multistep()
    mean, spread = step(x0_hat, x_t, *abars)
    expected, sigma = ddim.update(x0_hat, x_t, *abars, eta=0.0)
    torch.testing.assert_close(mean, expected)
    assert sigma == 0 and spread == pytest.approx(posterior_variance(*abars) ** 0.5) and spread > 0
    assert step(x0_hat, mean, abars[1], 1.0)[0] is x0_hat  # onto x0: the (first-order) step is x̂0
    if grid == "time":  # K = 2 on the same grid is DDIM as a whole run
        torch.testing.assert_close(
            dpm_solver.sample(den, SHAPE, steps=2, generator=gen(5)).x0,
            ddim.sample(den, SHAPE, steps=2, generator=gen(5)).x0,
        )
    three = dpm_solver.sample(den, SHAPE, steps=3, generator=gen(5), grid="time").x0
    assert not torch.allclose(three, ddim.sample(den, SHAPE, steps=3, generator=gen(5)).x0, atol=1e-4)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("steps", [1, 2, 3, 8, T])
def test_oracle_recovers_x0_and_ids(grid, steps):
    den, ids, x0 = oracle()
    out = dpm_solver.sample(den, SHAPE, steps=steps, generator=gen(), grid=grid, return_trajectory=True)
    assert torch.equal(out.x0, x0) and torch.equal(out.trajectory[-1], x0)
    assert torch.equal(out.tokens, ids)
    assert out.nfe == steps == len(den.calls)


class GaussianOracle(FakeDenoiser):
    """Data x0 ~ N(μ, s²) per coordinate: E[x0 | x_t] = μ + a·s²/(a²s² + b²)·(x_t − a·μ), a = √ᾱ, b² = 1 − ᾱ.

    The probability-flow ODE maps each coordinate's marginal N(aμ, a²s² + b²) affinely, so
    z = (x_t − aμ)/√(a²s² + b²) stays constant along it: the exact ODE solution from x_T is known.
    """

    MU, S = 0.5, 0.5

    def __init__(self):
        super().__init__(self.posterior_mean)
        self.schedule = make_schedule("sqrt", 200)

    def posterior_mean(self, x_t, t):
        a2 = self.schedule.alpha_bar(t.double()).view(-1, 1, 1).to(x_t)
        return self.MU + a2.sqrt() * self.S**2 / (a2 * self.S**2 + 1 - a2) * (x_t - a2.sqrt() * self.MU)

    def exact_x0(self, x_T):
        """x̂0 at t = 1/T on the exact ODE trajectory from x_T (the last x̂0 every sampler returns)."""
        a2_T, a2_0 = self.schedule.alphas_cumprod[[-1, 0]].tolist()
        z = (x_T - a2_T**0.5 * self.MU) / (a2_T * self.S**2 + 1 - a2_T) ** 0.5
        return self.MU + a2_0**0.5 * self.S**2 * z / (a2_0 * self.S**2 + 1 - a2_0) ** 0.5


def test_second_order_follows_the_exact_ode_closer_than_ddim_with_few_steps():
    den = GaussianOracle()
    shape = (32, 4, 6)
    exact = den.exact_x0(torch.randn(shape, generator=gen(0)))

    def error(sample, steps, **options):
        return (sample(den, shape, steps=steps, generator=gen(0), **options).x0 - exact).pow(2).mean().sqrt().item()

    assert error(ddim.sample, 200) < 0.01  # DDIM with every step: the ODE solution up to its discretization
    for grid, steps, ratio in [("time", 4, 0.6), ("time", 8, 0.3), ("logsnr", 10, 0.5), ("logsnr", 16, 0.2)]:
        ours, theirs = error(dpm_solver.sample, steps, grid=grid), error(ddim.sample, steps)
        print(f"{grid} K={steps}: 2M {ours:.4f}, DDIM {theirs:.4f}")
        assert ours < ratio * theirs, (grid, steps, ours, theirs)


# --- what the denoiser sees, hooks, options ----------------------------------------------


@pytest.mark.parametrize("grid", GRIDS)
def test_denoiser_never_sees_less_noise_than_trained_and_gets_self_cond(grid):
    den = FakeDenoiser(smooth, self_conditioning=True)
    for steps in (1, 4, 13, T):
        den.calls.clear()
        infos = []
        out = dpm_solver.sample(den, SHAPE, steps=steps, generator=gen(), grid=grid, callback=infos.append)
        ts = torch.stack([call.t for call in den.calls])  # [K, B]
        assert out.nfe == steps == len(ts)
        assert ts.max() == 1.0 and ts.min() >= den.schedule.time_of(0)
        assert steps == 1 or ts.min() == den.schedule.time_of(0)
    # self-conditioning as grid.walk gives DDIM: zeros first, then the previous raw x̂0
    assert torch.equal(den.calls[0].self_cond, torch.zeros(SHAPE))
    assert all(torch.equal(call.self_cond, info.x0) for call, info in zip(den.calls[1:], infos))


@pytest.mark.parametrize("grid", GRIDS)
def test_callback_and_guidance_see_the_grid_and_the_step_spread(grid):
    den = FakeDenoiser(smooth)
    K = 6
    times, abars = time_grid(den.schedule, K, grid)
    infos, guided = [], []

    def guidance(x, *, t, mean, std):
        guided.append((t, std.item()))
        assert torch.equal(x, mean)  # deterministic: the new state is the step's mean
        return x + 0.5

    out = dpm_solver.sample(
        den,
        SHAPE,
        steps=K,
        generator=gen(),
        callback=infos.append,
        guidance=guidance,
        grid=grid,
        return_trajectory=True,
    )
    assert [info.step for info in infos] == list(range(K))
    assert [info.t for info in infos] == times.tolist()
    assert all(torch.equal(info.x, x) for info, x in zip(infos, out.trajectory))
    assert [t for t, _ in guided] == times[1:].tolist()
    spreads = [posterior_variance(a, b) ** 0.5 for a, b in zip(abars, abars[1:])]
    assert [s for _, s in guided] == pytest.approx(spreads, rel=1e-6) and min(spreads) > 0
    plain = dpm_solver.sample(den, SHAPE, steps=K, generator=gen(), grid=grid)
    assert not torch.allclose(plain.x0, out.x0)  # the edit reached the next prediction


def test_seeded_runs_are_deterministic_with_correct_shapes():
    den = FakeDenoiser(smooth)
    a, b, c = (dpm_solver.sample(den, SHAPE, steps=5, generator=gen(s), grid="logsnr") for s in (11, 11, 12))
    assert torch.equal(a.x0, b.x0) and torch.equal(a.tokens, b.tokens) and not torch.equal(a.x0, c.x0)
    assert a.x0.shape == SHAPE and a.tokens.shape == (B, SHAPE[1]) and a.nfe == 5 and a.trajectory == []


def test_clamp_snaps_x0_to_embeddings():
    den, ids, x0 = oracle()
    den.fn = lambda x_t, t: x0 + 0.05 * torch.randn(x0.shape, generator=gen(9))
    out = dpm_solver.sample(den, SHAPE, steps=5, generator=gen(), grid="logsnr", clamp_from=T - 1)
    assert torch.equal(out.x0, x0) and torch.equal(out.tokens, ids)


def test_bad_options_raise():
    den = FakeDenoiser(smooth)
    for options, message in [
        ({"grid": "karras"}, "karras"),
        ({"grid": 2}, "grid"),
        ({"eta": 0.0}, "eta"),
        ({"order": 3}, "order"),
        ({"clamp_from": 0.5}, "clamp_from"),
    ]:
        with pytest.raises(ValueError, match=message):
            dpm_solver.sample(den, SHAPE, steps=3, **options)
    for steps in (0, T + 1, 2.5):
        with pytest.raises(ValueError, match="steps"):
            dpm_solver.sample(den, SHAPE, steps=steps, grid="logsnr")


# --- a tiny trained run -------------------------------------------------------------------


def test_samples_a_trained_run_close_to_the_fine_ode_solution(tiny_run):
    pipe = difflm.load(tiny_run)
    assert get_sampler("dpm++2m") is dpm_solver.sample
    texts = pipe.sample(6, sampler="dpm++2m", steps=8, seed=0, grid="logsnr")
    assert len(texts) == 6 and all(texts) and texts == pipe.sample(6, sampler="dpm++2m", steps=8, seed=0, grid="logsnr")
    fine = pipe.generate(32, sampler="ddim", steps=200, seed=1).tokens
    few = pipe.generate(32, sampler="dpm++2m", steps=10, seed=1).tokens
    agree = (few == fine).float().mean().item()
    print(f"dpm++2m 10 steps vs DDIM 200: {agree:.3f} of tokens agree")
    assert agree >= 0.9
    assert math.isfinite(pipe.generate(2, sampler="dpm++2m", steps=1).x0.sum().item())
