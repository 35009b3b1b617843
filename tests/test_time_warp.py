import json

import pytest
import torch

from difflm.config import Config
from difflm.diffusion.time_warp import BINS, FLOOR, TimeWarp
from difflm.train import Trainer
from tests.conftest import tiny_config, train_interrupted_then_resumed

T = 2000


def _fitted(curve, steps: int = 400, batch: int = 64) -> TimeWarp:
    """A warp that has watched a noiseless loss curve(t) for `steps` batches."""
    warp, g = TimeWarp(T), torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = warp.sample(batch, torch.rand(batch, generator=g))
        warp.observe(i, curve((i + 1).double() / T))
    return warp


def test_draws_are_uniform_until_every_bin_was_seen():
    warp = TimeWarp(T)
    assert torch.allclose(warp.density(), torch.full((BINS,), 1 / BINS, dtype=torch.float64))
    warp.observe(torch.tensor([0, 1999]), torch.tensor([0.0, 3.0]))
    assert torch.allclose(warp.density(), torch.full((BINS,), 1 / BINS, dtype=torch.float64))


def test_draws_follow_the_rise_of_the_loss():
    # loss = t³: F(t) = t³ up to the first bin, so P(t > 3/4) = (1 − FLOOR)(1 − (3/4)³) + FLOOR/4.
    warp = _fitted(lambda t: t**3)
    i = warp.sample(20_000, torch.rand(20_000, generator=torch.Generator().manual_seed(1)))
    t = (i + 1).double() / T
    expected = (1 - FLOOR) * (1 - 0.75**3) + FLOOR / 4
    assert (t > 0.75).double().mean().item() == pytest.approx(expected, abs=0.02)
    assert 0 <= int(i.min()) and int(i.max()) <= T - 1
    assert warp.density().sum().item() == pytest.approx(1.0)


def test_a_flat_loss_gives_uniform_draws():
    warp = _fitted(lambda t: torch.full_like(t, 1.5), steps=50)
    assert torch.allclose(warp.density(), torch.full((BINS,), 1 / BINS, dtype=torch.float64))


def test_stratified_draws_cover_the_distribution_evenly():
    # n stratified draws of a uniform warp land one per 1/n of the index range.
    i = TimeWarp(T).sample(100, torch.rand(100, generator=torch.Generator().manual_seed(2)))
    assert sorted((i // (T // 100)).tolist()) == list(range(100))


def test_state_round_trips_through_json():
    warp = _fitted(lambda t: t**2, steps=30)
    copy = TimeWarp(T)
    copy.load_state_dict(json.loads(json.dumps(warp.state_dict())))
    assert torch.equal(copy.density(), warp.density())
    with pytest.raises(ValueError, match="bins"):
        copy.load_state_dict({"curve": [0.0], "seen": [True]})


def test_warped_training_resumes_exactly(tmp_path, toy_corpus):
    config = tiny_config(f"lines:{toy_corpus}", "diffusion.time_sampling=warped", "train.steps=24", "train.log_every=4",
                         "train.eval_every=8", "train.checkpoint_every=8")
    full = Trainer(config, tmp_path / "full", progress=False)
    full.run()
    train_interrupted_then_resumed(config, tmp_path / "cut", crash_at=13)
    rows = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("full", "cut")]
    assert rows[0] == pytest.approx(rows[1], rel=1e-6)
    saved = json.loads((tmp_path / "cut" / "train_state.json").read_text())["time_warp"]
    assert saved == full.time_warp.state_dict()
    assert full.time_warp.density().max() > 2 / BINS  # it did warp


def test_warping_needs_cross_entropy_and_the_diffusion_generator():
    with pytest.raises(ValueError, match="model.predict=logits"):
        Config().with_overrides(["diffusion.time_sampling=warped", "model.predict=x0"])
    with pytest.raises(ValueError, match="draws its own training times"):
        Config().with_overrides(["diffusion.time_sampling=warped", "model.generator=shortcut"])
    with pytest.raises(ValueError, match="time_sampling must be one of"):
        Config().with_overrides(["diffusion.time_sampling=loss"])


def _observe_in_group(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    warp = TimeWarp(T)
    g = torch.Generator().manual_seed(rank)  # each process sees other rows
    for _ in range(20):
        i = warp.sample(32, torch.rand(32, generator=g))
        warp.observe(i, ((i + 1).double() / T) ** 2 + rank)
    torch.save(warp.curve, f"{out}/curve{rank}.pt")
    dist.destroy_process_group()


def test_processes_of_a_ddp_job_keep_one_curve(tmp_path):
    # Without the all-reduce each process would fit its own rows (rank 1's losses are 1 higher).
    torch.multiprocessing.spawn(_observe_in_group, args=(f"file://{tmp_path}/store", str(tmp_path)), nprocs=2)
    curves = [torch.load(tmp_path / f"curve{r}.pt") for r in (0, 1)]
    assert torch.equal(curves[0], curves[1])
