"""Two DDP processes of B rows take the same training step as one process of the same 2B rows.

The ranks are spawned with torch.multiprocessing (gloo, a file:// store) and run the real
`Trainer.train_step`, wrapped in DDP because RANK and WORLD_SIZE are set. `batch_indices`
gives them the two halves of the one-process batch; `SharedDraws` gives them the matching
halves of its noise (t, ε, the self-conditioning coins), which the trainer otherwise draws
per rank from `step_seed(seed, step, rank)`: other draws, as good, but not these.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from difflm.objectives.diffusion import e2e_loss
from difflm.train import Trainer, heldout_loss
from tests.conftest import tiny_config

WORLD, ROWS, STEPS = 2, 32, 2  # rows per rank; the one process takes WORLD * ROWS
COMMON = ["train.device=cpu", "train.warmup=2", "data.holdout=100"]  # held-out: more rows than one batch
CASES = {
    "logits": [],
    "x0-self-cond": [
        "model.predict=x0",
        "model.posterior_input=false",
        "model.self_condition=true",
        "diffusion.steps=8",
    ],
}


class SharedDraws:
    """Draws every tensor for all WORLD * B rows from one generator seeded alike on every rank
    (and per loss call), and hands this process its own rows."""

    calls = 0

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.device, self.gen = device, torch.Generator().manual_seed(1000 + SharedDraws.calls)
        SharedDraws.calls += 1
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def _mine(self, full: torch.Tensor) -> torch.Tensor:
        b = len(full) // self.world
        return full[self.rank * b : (self.rank + 1) * b].to(self.device)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self._mine(torch.randn((shape[0] * self.world, *shape[1:]), generator=self.gen))

    def rand(self, n: int) -> torch.Tensor:
        return self._mine(torch.rand(n * self.world, generator=self.gen))

    def randint(self, low: int, high: int, n: int) -> torch.Tensor:
        return self._mine(torch.randint(low, high, (n * self.world,), generator=self.gen))


def _steps(config, run_dir: Path) -> list[dict]:
    """STEPS training steps; after each, what the step left: gradients, weights, logged terms,
    and the held-out loss of the EMA weights as the run would log it."""
    torch.set_num_threads(1)
    scope = e2e_loss.__globals__  # where the loss looks its Draws up
    own_draws, SharedDraws.calls = scope["Draws"], 0
    trainer = Trainer(config, run_dir, progress=False)
    out = []
    for _ in range(STEPS):
        scope["Draws"] = SharedDraws
        try:
            terms = trainer.train_step()
        finally:
            scope["Draws"] = own_draws  # the held-out loss draws its own fixed noise
        out.append(
            {
                "terms": terms,
                "grad": {n: p.grad.clone() for n, p in trainer.model.named_parameters()},
                "param": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
                "heldout": heldout_loss(trainer.ema, trainer.data.valid, trainer.config, trainer.device, max_rows=128),
            }
        )
    return out


def _rank(rank: int, tmp: str, corpus: str, overrides: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    try:
        config = tiny_config(f"lines:{corpus}", f"train.batch_size={ROWS}", *COMMON, *overrides)
        torch.save(_steps(config, Path(tmp) / f"rank{rank}"), Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_step_equals_one_step_of_the_whole_batch(case, tmp_path, toy_corpus, monkeypatch):
    overrides = CASES[case]
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    whole = tiny_config(f"lines:{toy_corpus}", f"train.batch_size={WORLD * ROWS}", *COMMON, *overrides)
    single = _steps(whole, tmp_path / "single")
    mp.spawn(_rank, args=(str(tmp_path), str(toy_corpus), overrides), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    live = None  # weights whose gradient is not 0 at every step so far (see below)
    for step, (one, r0, r1) in enumerate(zip(single, *ranks)):
        where = f"step {step}"
        for name, g in one["grad"].items():
            assert torch.equal(r0["param"][name], r1["param"][name]), f"{where}: ranks out of sync in {name}"
            err = ((r0["grad"][name] - g).norm() / g.norm().clamp_min(1e-12)).item()
            assert err < 1e-4, f"{where}: DDP gradient of {name} differs by {err:.1e} (relative)"
        assert r0["terms"]["grad_norm"] == pytest.approx(one["terms"]["grad_norm"], rel=1e-5)
        # Each rank logs the loss of its own rows; with equal halves their mean is the whole batch's.
        assert sum(r["terms"]["loss"] for r in (r0, r1)) / WORLD == pytest.approx(one["terms"]["loss"], rel=1e-5)
        # The update. Some gradients are 0 but for rounding (the attention's key bias: softmax
        # ignores a constant per query), and Adam's g / (|g| + eps) turns that ~1e-11 noise into
        # steps of up to ~1e-5 either way, in one process as in two; those weights are left out.
        scale = max(g.abs().max() for g in one["grad"].values())
        now = {n: g.abs() > 1e-7 * scale for n, g in one["grad"].items()}
        live = now if live is None else {n: live[n] & now[n] for n in now}
        for name, p in one["param"].items():
            diff = ((r0["param"][name] - p).abs() * live[name]).max().item()
            assert diff < 1e-6, f"{where}: weights {name} differ by {diff:.1e} after the update"
        # The held-out loss of equal EMA weights must not depend on the per-process batch size.
        for key, value in one["heldout"].items():
            assert r0["heldout"][key] == pytest.approx(value, rel=1e-5), f"{where}: held-out {key}"
