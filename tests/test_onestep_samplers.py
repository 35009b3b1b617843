"""Shortcut, MeanFlow and consistency samplers: oracle recovery, grids, NFE, seeds, hooks, errors."""

import pytest
import torch

from difflm.diffusion.consistency import sigma_range
from difflm.diffusion.paths import sigma_of_t, tau_of_t
from difflm.sampling import get_sampler
from tests.oracles import WORDS, D, L, Oracle, gen, the_point, tiny_denoiser

ONE_STEP = ["shortcut", "meanflow", "consistency", "distilled"]
SHAPE = (3, L, D)


def model_for(name):
    return tiny_denoiser(name).eval()


@pytest.mark.parametrize("name", ONE_STEP)
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_exact_models_recover_the_sentence(name, steps):
    oracle = Oracle(the_point)
    out = get_sampler(name)(oracle, SHAPE, steps=steps, generator=gen())
    assert torch.equal(out.tokens, WORDS.expand(3, L)) and out.nfe == steps
    if name != "consistency":  # straight lines: every jump lands on the point itself
        torch.testing.assert_close(out.x0, oracle.mu.expand(SHAPE))


@pytest.mark.parametrize("name", ONE_STEP)
def test_seeded_runs_are_deterministic_with_correct_shapes(name):
    model = model_for(name)
    a, b, c = (get_sampler(name)(model, SHAPE, steps=2, generator=gen(seed)) for seed in (5, 5, 6))
    assert torch.equal(a.x0, b.x0) and torch.equal(a.tokens, b.tokens) and not torch.equal(a.x0, c.x0)
    assert a.x0.shape == SHAPE and a.tokens.shape == SHAPE[:2] and a.tokens.dtype == torch.long
    assert a.nfe == 2 and a.trajectory == []


class Recorder(Oracle):
    def __init__(self):
        super().__init__(the_point)
        self.calls = []

    def __call__(self, x_vp, t, *, jump=None, cond=None, self_cond=None):
        self.calls.append((t.clone(), None if jump is None else jump.clone()))
        return super().__call__(x_vp, t, jump=jump)


@pytest.mark.parametrize("name", ["shortcut", "meanflow"])
def test_flow_map_samplers_jump_along_a_uniform_grid_from_the_noisiest_trained_level(name):
    oracle = Recorder()
    get_sampler(name)(oracle, SHAPE, steps=4, generator=gen())
    s = [float(tau_of_t(oracle.schedule, t[0].double())) / oracle.path.tau_max for t, _ in oracle.calls]
    assert s == pytest.approx([1.0, 0.75, 0.5, 0.25], abs=1e-5)
    assert float(oracle.calls[0][0][0]) == pytest.approx(1.0)  # t = 1: never noisier than trained
    assert all(torch.equal(j, torch.full((3,), 0.25)) for _, j in oracle.calls)


def test_consistency_sampler_starts_at_sigma_max_and_renoises_less_each_step():
    seen = []

    class Spy(Oracle):
        def __call__(self, x_vp, t, **kwargs):
            seen.append(float(sigma_of_t(self.schedule, t[0].double())))
            return super().__call__(x_vp, t, **kwargs)

    spy = Spy(the_point)
    sigma_min, sigma_max = sigma_range(spy.schedule)
    get_sampler("consistency")(spy, SHAPE, steps=3, generator=gen())
    assert seen[0] == pytest.approx(sigma_max, rel=1e-4)
    assert seen[0] > seen[1] > seen[2] > sigma_min


@pytest.mark.parametrize("name", ONE_STEP)
def test_callback_trajectory_and_guidance_hooks(name):
    model, K = model_for(name), 4
    infos, guided = [], []

    def guidance(x, *, t, mean, std):
        guided.append(t)
        assert mean.shape == x.shape and isinstance(std, torch.Tensor) and 0 < t <= 1
        return x + 0.5

    out = get_sampler(name)(
        model, SHAPE, steps=K, generator=gen(), callback=infos.append, guidance=guidance, return_trajectory=True
    )
    assert [info.step for info in infos] == list(range(K)) and len(out.trajectory) == K
    times = [info.t for info in infos]
    assert times[0] == pytest.approx(1.0) and all(a > b for a, b in zip(times, times[1:]))
    assert len(guided) == K - 1 and all(a > b for a, b in zip(guided, guided[1:]))
    plain = get_sampler(name)(model, SHAPE, steps=K, generator=gen())
    assert not torch.allclose(plain.x0, out.x0)  # the edit reached the next prediction


@pytest.mark.parametrize("name", ONE_STEP)
def test_clamping_snaps_the_predictions_to_embeddings(name):
    model = model_for(name)
    infos = []
    out = get_sampler(name)(
        model, SHAPE, steps=2, generator=gen(), clamp_from=model.schedule.num_steps - 1, callback=infos.append
    )
    table = model.embedding.table()
    for info in infos:
        torch.testing.assert_close(info.x0, table[model.embedding.nearest(info.x0)])
    unclamped = get_sampler(name)(model, SHAPE, steps=2, generator=gen())
    assert not torch.equal(unclamped.x0, out.x0)


def test_bad_steps_options_and_models_raise():
    model = model_for("shortcut")
    for steps in (0, 3, 6, 2.0):
        with pytest.raises(ValueError, match="power of two"):
            get_sampler("shortcut")(model, SHAPE, steps=steps)
    for name in ("meanflow", "consistency", "distilled"):
        with pytest.raises(ValueError, match="steps"):
            get_sampler(name)(model_for(name), SHAPE, steps=0)
    for name in ONE_STEP:
        with pytest.raises(ValueError, match="eta"):
            get_sampler(name)(model_for(name), SHAPE, steps=1, eta=0.0)
        with pytest.raises(ValueError, match="clamp_from"):
            get_sampler(name)(model_for(name), SHAPE, steps=1, clamp_from=0.5)
    with pytest.raises(ValueError, match="jump"):  # a diffusion model has no jump input
        get_sampler("shortcut")(model_for("diffusion"), SHAPE, steps=1)
