"""Left-to-right noise (AR-Diffusion): the sweep's times, a time per position in the denoiser
and the loss, and the sampler that finishes the left positions first."""

from __future__ import annotations

import pytest
import torch

import difflm
from difflm.cli import main
from difflm.config import ModelConfig
from difflm.diffusion.schedules import make_schedule
from difflm.diffusion.sweep import sweep_times
from difflm.model.anchors import anchors_of
from difflm.model.denoiser import Denoiser
from difflm.objectives import Batch
from difflm.objectives.diffusion import e2e_loss
from difflm.run import build_model
from difflm.sampling import get_sampler
from difflm.sampling.wrappers import DenoiserWrapper
from tests.conftest import tiny_config

torch.set_num_threads(1)


def _denoiser(sweep_lag: float = 1.0, **model: object) -> Denoiser:
    torch.manual_seed(0)
    config = ModelConfig(embed_dim=8, hidden=32, layers=1, heads=2, dropout=0.0, self_condition=True, **model)
    return Denoiser(config, 11, 8, make_schedule("sqrt", 100), sweep_lag=sweep_lag).eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_corpus):
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / "swept"
    config = tiny_config(
        f"lines:{toy_corpus}",
        "train.steps=200",
        "train.lr=3e-3",
        "diffusion.sweep=0.5",
        "diffusion.length_anchors=true",
        "train.length_pool=4",
    )
    train(config, out, progress=False)
    return out


def test_sweep_times_closed_form():
    u = torch.tensor([2.0, 0.0, 1.5, 0.7])
    t = sweep_times(u, torch.tensor([4, 4, 4, 2]), 6, lag=1.0)
    assert torch.equal(t[0], torch.ones(6)) and torch.equal(t[1], torch.zeros(6))  # u = 1 + λ: noise; u = 0: clean
    assert torch.allclose(t[2], torch.tensor([0.5, 0.75, 1.0, 1.0, 1.0, 1.0]))  # 1.5 − (1 − i/4), clipped
    assert torch.allclose(t[3], torch.tensor([0.0, 0.2, 0.7, 0.7, 0.7, 0.7]))  # span 2: p = 1 from position 2
    assert (t.diff(dim=1) >= 0).all()  # left is never noisier than right
    shared = u.clamp(max=1)[:, None].expand(4, 6)
    assert torch.equal(sweep_times(u, torch.full((4,), 5), 6, lag=0.0), shared)  # λ = 0: ordinary diffusion's t
    with pytest.raises(ValueError, match="lag"):
        sweep_times(u, torch.full((4,), 5), 6, lag=-1.0)


@pytest.mark.parametrize("model", [{"predict": "x0"}, {"predict": "eps", "posterior_input": True}])
def test_a_time_per_position_that_is_shared_gives_the_shared_time_prediction(model):
    denoiser = _denoiser(**model)
    x, t = torch.randn(3, 8, 8), torch.rand(3)
    with torch.no_grad():
        shared, per_position = denoiser(x, t), denoiser(x, t[:, None].expand(3, 8))
    assert torch.allclose(shared.x0, per_position.x0, atol=1e-6)
    with pytest.raises(ValueError, match=r"a time per position must be \[B, L\]"):
        denoiser(x, torch.rand(3, 5))


def test_the_sampler_at_lag_zero_is_ddim_on_the_trailing_grid():
    denoiser = _denoiser()
    ddim = get_sampler("ddim")(
        denoiser, (3, 8, 8), steps=10, generator=torch.Generator().manual_seed(0), grid="trailing", temperature=0.5
    )
    sweep = get_sampler("sweep")(
        denoiser, (3, 8, 8), steps=10, generator=torch.Generator().manual_seed(0), lag=0.0, temperature=0.5
    )
    assert torch.allclose(ddim.x0, sweep.x0, atol=1e-5) and torch.equal(ddim.tokens, sweep.tokens)


def test_the_sampler_finishes_left_positions_first():
    denoiser, times = _denoiser(sweep_lag=1.0), []

    class Spy(DenoiserWrapper):
        def __call__(self, x_t, t, **inputs):
            times.append(t)
            return self.denoiser(x_t, t, **inputs)

    out = get_sampler("sweep")(
        Spy(denoiser), (2, 8, 8), steps=8, generator=torch.Generator().manual_seed(0), return_trajectory=True
    )
    assert len(times) == out.nfe == 8
    assert all((t.diff(dim=1) >= 0).all() for t in times)  # each call: left cleaner than right
    assert times[0].min() == 1.0 and float(times[-1].max()) == pytest.approx(2 / 8)  # u: 1 + λ … (1 + λ)/K
    # A position that reached t = 0 is finished: its state no longer changes.
    least = 1 / denoiser.schedule.num_steps
    done = [(t <= least) for t in times[1:]]  # evaluated at the floor 1/T: finished on the step before
    first_done = next(k for k, d in enumerate(done) if d[0, 1])
    assert torch.equal(out.trajectory[first_done][:, 1], out.trajectory[-1][:, 1])
    assert not torch.equal(out.trajectory[first_done][:, -1], out.trajectory[-1][:, -1])  # the right still moves


def test_the_loss_gives_swept_rows_a_time_per_position(toy_corpus):
    config = tiny_config(f"lines:{toy_corpus}", "diffusion.sweep=1.0", "diffusion.length_anchors=true")
    denoiser, seen = build_model(config, 20), []
    denoiser.lengths.fill_(1.0)
    real = denoiser.forward

    def spy(x_t, t, **inputs):
        seen.append(t)
        return real(x_t, t, **inputs)

    denoiser.forward = spy  # type: ignore[method-assign]
    ids = torch.tensor([[1, 5, 6, 7, 2, 0, 0, 0]] * 6 + [[1, 5, 2, 0, 0, 0, 0, 0]] * 2)
    loss = e2e_loss(denoiser, Batch(ids), config, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss.loss)
    t = seen[-1]  # the denoising pass (an earlier one may be self-conditioning's)
    assert t.shape == ids.shape and (t.diff(dim=1)[~anchors_of(ids)[:, 1:]] >= 0).all()
    # The sweep spans each row's words: a row's positions from its END on share the END's time.
    ends = (~anchors_of(ids)).sum(1)
    assert all((t[r, ends[r] :] == t[r, ends[r]]).all() for r in range(len(ids)))
    shared = e2e_loss(denoiser, Batch(ids), tiny_config(f"lines:{toy_corpus}", "diffusion.length_anchors=true"))
    assert torch.isfinite(shared.loss) and seen[-1].shape == (len(ids),)  # sweep off: one time per row


def test_a_swept_run_samples_left_to_right_and_still_takes_guidance(run, tiny_run, capsys):
    pipe = difflm.load(run)
    assert pipe.model.sweep_lag == 1.0
    out = pipe.generate(4, sampler="sweep", steps=10)
    assert out.nfe == 10 and out.tokens.shape == (4, 16)
    assert pipe.default_sampler == "sweep" and torch.equal(pipe.generate(4, steps=10).tokens, out.tokens)
    assert difflm.load(tiny_run).default_sampler == "ddpm"
    texts = pipe.sample(4, sampler="sweep", steps=10)
    assert len(texts) == 4 and all(texts)
    # The shared-t rows of training keep constraints working through the other samplers.
    assert main(["control", str(run), "--length", "5", "--n", "2", "--steps", "10"]) == 0
    for argv, message in (
        (["control", str(run), "--length", "5", "--n", "2", "--sampler", "sweep"], "no gradient guidance"),
        (["sample", str(tiny_run), "--n", "2", "--sampler", "sweep"], "not trained with left-to-right noise"),
        (["sample", str(run), "--n", "2", "--sampler", "sweep", "--clamp-from", "3"], "does not clamp"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_config_refuses_bad_sweeps():
    for override, message in (
        ("diffusion.sweep=1.5", "diffusion.sweep must be in"),
        ("diffusion.sweep_lag=0", "diffusion.sweep_lag must be > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            tiny_config("grammar", override)
    with pytest.raises(ValueError, match="diffusion.sweep needs model.generator=diffusion"):
        tiny_config("grammar", "diffusion.sweep=0.5", "model.generator=shortcut")
