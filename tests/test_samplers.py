"""DDPM and DDIM samplers: diffusers parity, oracle recovery, hooks and option checking."""

from types import SimpleNamespace

import pytest
import torch

from difflm.diffusion.schedules import make_schedule
from difflm.model.embedding import WordEmbedding
from difflm.sampling import SAMPLERS, ddim, ddpm, get_sampler
from difflm.sampling.grid import respaced_indices, time_grid, trailing_indices, walk

diffusers = pytest.importorskip("diffusers")

T, V, B, L, D = 20, 9, 2, 5, 6
SHAPE = (B, L, D)
# The one/few-step models' samplers have their own tests (test_onestep_samplers.py).
# The samplers that walk the shared time grid (the sweep gives each position its own time: tests/test_sweep.py).
GRID_SAMPLERS = sorted(set(SAMPLERS) - {"shortcut", "meanflow", "consistency", "distilled", "sweep"})


class FakeDenoiser:
    """Stands in for difflm.model.denoiser.Denoiser: x̂0 = fn(x_t, t), logits from the embedding."""

    def __init__(self, fn, *, schedule_name="sqrt", self_conditioning=False):
        torch.manual_seed(0)
        self.schedule = make_schedule(schedule_name, T)
        self.embedding = WordEmbedding(V, D, normalize=True)  # equal norms: argmax of logits = nearest
        self.self_conditioning = self_conditioning
        self.fn = fn
        self.calls = []

    def __call__(self, x_t, t, *, cond=None, self_cond=None):
        self.calls.append(SimpleNamespace(x=x_t, t=t, cond=cond, self_cond=self_cond))
        x0 = self.fn(x_t, t)
        return SimpleNamespace(x0=x0, logits=self.embedding.logits(x0))


def smooth(x_t, t):
    """A deterministic, input-dependent x̂0 so that parity tests exercise every coefficient."""
    return torch.tanh(x_t) * 0.8 + 0.1 * t.view(-1, 1, 1)


def oracle():
    ids = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(1))
    den = FakeDenoiser(lambda x_t, t: x0)
    x0 = den.embedding(ids).detach()
    return den, ids, x0


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- the grid ---------------------------------------------------------------------------


def test_respaced_indices():
    assert respaced_indices(10, 10) == list(range(9, -1, -1))
    assert respaced_indices(10, 1) == [9]
    assert respaced_indices(2000, 2) == [1999, 0]
    for T_, K in [(20, 7), (2000, 13), (5, 4), (1000, 999)]:
        idx = respaced_indices(T_, K)
        assert len(idx) == K and idx[0] == T_ - 1 and idx[-1] == 0
        assert all(a > b for a, b in zip(idx, idx[1:]))
    for bad in (0, 11, 2.0):
        with pytest.raises(ValueError, match="steps"):
            respaced_indices(10, bad)


def test_grids_that_start_below_t_1():
    assert respaced_indices(10, 3, top=4) == [4, 2, 0]
    assert trailing_indices(2000, 2, top=999) == [999, 499]  # t = 0.5, 0.25: the trailing grid scaled by ½
    assert trailing_indices(2000, 4, top=1999) == trailing_indices(2000, 4)
    schedule = make_schedule("sqrt", T)
    for spacing in ("time", "trailing", "logsnr"):
        times, abars = time_grid(schedule, 3, spacing, top=9)
        assert float(times[0]) == pytest.approx(10 / T) and abars[0] == pytest.approx(float(schedule.alphas_cumprod[9]))
        assert all(a > b for a, b in zip(times.tolist(), times.tolist()[1:])) and float(times[-1]) >= 1 / T - 1e-9
    with pytest.raises(ValueError, match="first training index"):
        respaced_indices(10, 2, top=10)
    with pytest.raises(ValueError, match="steps"):
        trailing_indices(10, 4, top=2)  # 4 steps do not fit in 3 training steps


def test_walk_from_a_given_state_with_given_noise():
    den = FakeDenoiser(smooth)
    start = torch.randn(SHAPE, generator=gen(3))
    fixed = torch.randn(SHAPE, generator=gen(4))
    runs = [
        walk(ddpm.update, den, SHAPE, steps=3, start=start, start_index=9, noise=lambda n: fixed, generator=gen(seed))
        for seed in (0, 1)
    ]
    assert torch.equal(runs[0].x0, runs[1].x0)  # the generator is not drawn from: start and noise are given
    assert [round(float(c.t[0]) * T) for c in den.calls[:3]] == [i + 1 for i in respaced_indices(T, 3, top=9)]
    assert round(float(den.calls[0].t[0]) * T) == 10  # the first evaluation is at index 9
    torch.testing.assert_close(den.calls[0].x, start)
    other = walk(ddpm.update, den, SHAPE, steps=3, start=start, start_index=9, generator=gen(0))
    assert not torch.equal(other.x0, runs[0].x0)


# --- parity with diffusers --------------------------------------------------------------


def test_ddpm_run_equals_diffusers_on_the_same_grid():
    den = FakeDenoiser(smooth)
    K = 7
    out = ddpm.sample(den, SHAPE, steps=K, generator=gen(3), return_trajectory=True)
    ref = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        trained_betas=den.schedule.betas.numpy(),
        prediction_type="sample",
        clip_sample=False,
        variance_type="fixed_small",
    )
    ref.set_timesteps(timesteps=respaced_indices(T, K))
    g = gen(3)
    x = torch.randn(SHAPE, generator=g)
    for i in ref.timesteps.tolist():
        x = ref.step(smooth(x, torch.full((B,), (i + 1) / T)), i, x, generator=g).prev_sample
    torch.testing.assert_close(out.trajectory[-1], x)
    torch.testing.assert_close(out.x0, x)  # the last step lands on x̂0


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_run_equals_diffusers_at_full_length(eta):
    den = FakeDenoiser(smooth)
    out = ddim.sample(den, SHAPE, steps=T, generator=gen(4), eta=eta, return_trajectory=True)
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=T,
        trained_betas=den.schedule.betas.numpy(),
        prediction_type="sample",
        clip_sample=False,
        set_alpha_to_one=True,
    )
    ref.set_timesteps(T)
    g = gen(4)
    x = torch.randn(SHAPE, generator=g)
    for i in ref.timesteps.tolist():
        x = ref.step(smooth(x, torch.full((B,), (i + 1) / T)), i, x, eta=eta, generator=g).prev_sample
    torch.testing.assert_close(out.trajectory[-1], x)


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("n, t", [(4, 19), (4, 7), (4, 3), (10, 1), (10, 0)])
def test_ddim_step_equals_diffusers_between_explicit_pairs(eta, n, t):
    # diffusers' DDIM steps from t to t - T//n (s < 0 means x0, ᾱ = 1): pick the pair that way
    schedule = make_schedule("sqrt", T)
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=T,
        trained_betas=schedule.betas.numpy(),
        prediction_type="sample",
        clip_sample=False,
        set_alpha_to_one=True,
    )
    ref.set_timesteps(n)
    s = t - T // n
    x_t, x0_hat, z = (torch.randn(SHAPE, generator=gen(k)) for k in (5, 6, 7))
    expected = ref.step(x0_hat, t, x_t, eta=eta, variance_noise=z).prev_sample
    acp = schedule.alphas_cumprod
    mean, std = ddim.update(x0_hat, x_t, acp[t].item(), acp[s].item() if s >= 0 else 1.0, eta=eta)
    torch.testing.assert_close(mean + std * z, expected)


def test_ddim_eta_one_is_ddpm():
    acp = make_schedule("cosine", T).alphas_cumprod
    x_t, x0_hat = torch.randn(SHAPE, generator=gen(1)), torch.randn(SHAPE, generator=gen(2))
    for t, s in [(19, 12), (5, 4), (3, -1)]:
        abar_s = acp[s].item() if s >= 0 else 1.0
        m1, s1 = ddim.update(x0_hat, x_t, acp[t].item(), abar_s, eta=1.0)
        m2, s2 = ddpm.update(x0_hat, x_t, acp[t].item(), abar_s)
        torch.testing.assert_close(m1, m2)
        assert s1 == pytest.approx(s2)


# --- math properties --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler, options", [(ddim.sample, {"eta": 0.0}), (ddim.sample, {"eta": 1.0}), (ddpm.sample, {})]
)
@pytest.mark.parametrize("steps", [1, 6, T])
def test_oracle_recovers_x0_and_ids(sampler, options, steps):
    den, ids, x0 = oracle()
    out = sampler(den, SHAPE, steps=steps, generator=gen(), return_trajectory=True, **options)
    assert torch.equal(out.x0, x0)
    torch.testing.assert_close(out.trajectory[-1], x0, rtol=0, atol=1e-6)
    assert torch.equal(out.tokens, ids)


@pytest.mark.parametrize("name", GRID_SAMPLERS)
def test_seeded_runs_are_deterministic_with_correct_shapes(name):
    sample = get_sampler(name)
    den = FakeDenoiser(smooth)
    a = sample(den, SHAPE, steps=5, generator=gen(11))
    b = sample(den, SHAPE, steps=5, generator=gen(11))
    c = sample(den, SHAPE, steps=5, generator=gen(12))
    assert torch.equal(a.x0, b.x0) and torch.equal(a.tokens, b.tokens) and not torch.equal(a.x0, c.x0)
    assert a.x0.shape == SHAPE and a.tokens.shape == (B, L) and a.tokens.dtype == torch.long
    assert a.nfe == 5 and a.trajectory == []


@pytest.mark.parametrize("name", GRID_SAMPLERS)
def test_denoiser_sees_training_times_cond_and_self_cond(name):
    den = FakeDenoiser(smooth, self_conditioning=True)
    cond = object()
    get_sampler(name)(den, SHAPE, steps=4, generator=gen(), cond=cond)
    idx = respaced_indices(T, 4)
    assert len(den.calls) == 4
    for call, i in zip(den.calls, idx):
        assert call.cond is cond and call.t.shape == (B,)
        torch.testing.assert_close(call.t, torch.full((B,), (i + 1) / T))
    assert torch.equal(den.calls[0].self_cond, torch.zeros(SHAPE))
    assert den.calls[1].self_cond is not None and den.calls[1].self_cond.abs().sum() > 0

    den = FakeDenoiser(smooth)
    get_sampler(name)(den, SHAPE, steps=3, generator=gen())
    assert all(call.self_cond is None for call in den.calls)


# --- hooks ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRID_SAMPLERS)
def test_callback_and_guidance_hooks(name):
    den = FakeDenoiser(smooth)
    K, idx = 6, respaced_indices(T, 6)
    infos, guided = [], []

    def guidance(x, *, t, mean, std):
        assert not torch.is_grad_enabled()  # samplers run under no_grad; guidance opts in
        with torch.enable_grad():
            guided.append((t, std))
        assert mean.shape == x.shape and isinstance(std, torch.Tensor)
        return x + 1.0

    out = get_sampler(name)(
        den, SHAPE, steps=K, generator=gen(), callback=infos.append, guidance=guidance, return_trajectory=True
    )
    assert [info.step for info in infos] == list(range(K))
    assert [info.t for info in infos] == pytest.approx([(i + 1) / T for i in idx])
    assert all(torch.equal(info.x, x) for info, x in zip(infos, out.trajectory))
    assert len(guided) == K - 1
    assert [t for t, _ in guided] == pytest.approx([(s + 1) / T for s in idx[1:]])
    plain = get_sampler(name)(den, SHAPE, steps=K, generator=gen())
    assert not torch.allclose(plain.x0, out.x0)  # the edit reached the next prediction


def test_clamp_snaps_x0_to_embeddings():
    den, ids, x0 = oracle()
    den.fn = lambda x_t, t: x0 + 0.05 * torch.randn(x0.shape, generator=gen(9))
    out = ddim.sample(den, SHAPE, steps=5, generator=gen(), clamp_from=T - 1)
    assert torch.equal(out.x0, x0) and torch.equal(out.tokens, ids)
    unclamped = ddim.sample(den, SHAPE, steps=5, generator=gen(), clamp_from=None)
    assert not torch.equal(unclamped.x0, x0)


@pytest.mark.parametrize("name", GRID_SAMPLERS)
def test_temperature_steps_with_the_sharpened_mean_embedding(name):
    den = FakeDenoiser(smooth)
    table = den.embedding.table().detach()
    seen = {}

    def run(tau):
        seen[tau] = []
        out = get_sampler(name)(
            den, SHAPE, steps=4, generator=gen(2), temperature=tau, callback=lambda info: seen[tau].append(info.x0)
        )
        return out

    plain, default = run(1.0), get_sampler(name)(den, SHAPE, steps=4, generator=gen(2))
    assert torch.equal(plain.x0, default.x0)  # τ = 1 is the model's own x̂0
    sharp = run(0.5)
    run(0.0)  # records its first x̂0 in seen[0.0]
    first = smooth(torch.randn(SHAPE, generator=gen(2)), torch.ones(B))  # every run starts at the same x_T
    logits = first @ table.t()
    torch.testing.assert_close(seen[0.5][0], (logits / 0.5).softmax(-1) @ table)
    torch.testing.assert_close(seen[0.0][0], table[logits.argmax(-1)])
    # a vanishing temperature tends to the argmax word's embedding
    run(1e-4)
    torch.testing.assert_close(seen[1e-4][0], seen[0.0][0])
    assert not torch.equal(sharp.x0, plain.x0) and sharp.tokens.shape == (B, L)


def test_progress_bar_runs():
    den = FakeDenoiser(smooth)
    out = ddpm.sample(den, SHAPE, steps=3, generator=gen(), progress=True)
    assert out.nfe == 3


# --- errors -----------------------------------------------------------------------------


def test_bad_options_raise():
    den = FakeDenoiser(smooth)
    with pytest.raises(ValueError, match="top_k"):
        ddim.sample(den, SHAPE, steps=3, top_k=5)
    for tau in (-0.1, "0.5", float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            ddim.sample(den, SHAPE, steps=3, temperature=tau)
    with pytest.raises(ValueError, match="eta"):  # DDPM has no η
        ddpm.sample(den, SHAPE, steps=3, eta=0.5)
    for eta in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="eta"):
            ddim.sample(den, SHAPE, steps=3, eta=eta)
    for steps in (0, T + 1):
        for name in GRID_SAMPLERS:
            with pytest.raises(ValueError, match="steps"):
                get_sampler(name)(den, SHAPE, steps=steps)
    with pytest.raises(ValueError, match="clamp_from"):
        ddpm.sample(den, SHAPE, steps=3, clamp_from=0.5)
    with pytest.raises(ValueError, match=r"'plms'.*ddim, ddpm"):
        get_sampler("plms")
