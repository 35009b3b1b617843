"""Noise schedules: known values, diffusers parity, the continuous ᾱ(t) and its inverse."""

import math

import pytest
import torch

from difflm.diffusion.schedules import make_schedule

diffusers = pytest.importorskip("diffusers")

NAMES = ["sqrt", "cosine", "linear"]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtype(name):
    s = make_schedule(name, 50)
    assert s.name == name and s.num_steps == 50
    for v in (s.betas, s.alphas_cumprod):
        assert v.shape == (50,) and v.dtype == torch.float64
    assert torch.all(s.betas > 0) and torch.all(s.betas <= 0.999)
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])


def test_sqrt_known_values():
    s = make_schedule("sqrt", 2000)
    assert s.betas[0].item() == pytest.approx(0.01464, abs=1e-5)
    assert s.betas[1].item() == pytest.approx(0.00889, abs=1e-5)
    assert s.betas[-1].item() == pytest.approx(0.999)
    assert math.sqrt(1 - s.alphas_cumprod[0].item()) == pytest.approx(0.1210, abs=1e-4)
    # Only the last β is clipped: elsewhere ᾱ_i = (1 − √((i+1)/T + 1e-4))/0.99 (ᾱ(0) = 0.99).
    i = torch.arange(1999, dtype=torch.float64)
    expected = (1 - torch.sqrt((i + 1) / 2000 + 1e-4)) / 0.99
    torch.testing.assert_close(s.alphas_cumprod[:-1], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_equal_to_diffusers_trained_betas(name):
    s = make_schedule(name, 100)
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, trained_betas=s.betas.numpy(), clip_sample=False)
    torch.testing.assert_close(s.betas.float(), ref.betas)
    torch.testing.assert_close(s.alphas_cumprod.float(), ref.alphas_cumprod)


def test_cosine_and_linear_match_diffusers_builtins():
    T = 1000
    cosine = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(make_schedule("cosine", T).betas.float(), cosine.betas)
    # improved-diffusion's rescaling by 1000/T; at T = 250 the range is 4e-4 .. 0.08
    linear = diffusers.DDPMScheduler(num_train_timesteps=250, beta_start=4e-4, beta_end=0.08)
    torch.testing.assert_close(make_schedule("linear", 250).betas.float(), linear.betas)


@pytest.mark.parametrize("name", NAMES)
def test_alpha_bar_exact_at_grid_and_linear_between(name):
    s = make_schedule(name, 40)
    t = torch.arange(41, dtype=torch.float64) / 40
    grid = torch.cat([torch.ones(1, dtype=torch.float64), s.alphas_cumprod])
    torch.testing.assert_close(s.alpha_bar(t), grid, rtol=0, atol=1e-15)
    mid = (torch.arange(40, dtype=torch.float64) + 0.25) / 40
    torch.testing.assert_close(s.alpha_bar(mid), 0.75 * grid[:-1] + 0.25 * grid[1:])
    # the time of training index i is where ᾱ_i lives
    idx = torch.arange(40)
    torch.testing.assert_close(s.alpha_bar(s.time_of(idx).double()), s.alphas_cumprod)


def test_time_of():
    s = make_schedule("sqrt", 8)
    t = s.time_of(torch.tensor([0, 3, 7]))
    assert t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([1 / 8, 4 / 8, 1.0]))


@pytest.mark.parametrize("name", NAMES)
def test_log_snr_inverse_round_trips(name):
    s = make_schedule(name, 64)
    t = torch.cat(
        [
            torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.999 + 1e-3,
            torch.arange(1, 65, dtype=torch.float64) / 64,
        ]
    )
    lam = s.log_snr(t)
    assert torch.all(lam[:-1].isfinite())
    torch.testing.assert_close(s.t_from_log_snr(lam), t, rtol=0, atol=1e-9)
    assert s.log_snr(torch.tensor(0.0)).item() == math.inf
    assert s.t_from_log_snr(torch.tensor(-50.0)).item() == 1.0  # below λ(1): clipped to t = 1


def test_float32_inputs_keep_dtype():
    s = make_schedule("sqrt", 100)
    t = torch.linspace(0.01, 1, 7)
    assert s.alpha_bar(t).dtype == torch.float32
    assert s.log_snr(t).dtype == torch.float32
    assert s.t_from_log_snr(s.log_snr(t)).dtype == torch.float32
    torch.testing.assert_close(s.t_from_log_snr(s.log_snr(t)), t, atol=1e-5, rtol=0)


def test_out_of_range_time_raises():
    with pytest.raises(ValueError, match="t must lie in"):
        make_schedule("sqrt", 10).alpha_bar(torch.tensor([1.5]))


def test_bad_name_or_steps_raise():
    with pytest.raises(ValueError, match=r"'quadratic'.*cosine, linear, sqrt"):
        make_schedule("quadratic", 100)
    for bad in (1, 0, 2.5):
        with pytest.raises(ValueError, match="num_steps"):
            make_schedule("sqrt", bad)


def test_linear_is_clipped_for_small_T():
    s = make_schedule("linear", 10)
    assert s.betas.max().item() == pytest.approx(0.999)
    assert torch.all(s.alphas_cumprod > 0)
