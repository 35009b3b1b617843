import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import difflm
from difflm.loop import lr_at
from difflm.run import build_model
from difflm.text.dataset import prepare_data
from difflm.train import Trainer, batch_indices, heldout_loss
from tests.conftest import tiny_config, train_interrupted_then_resumed

TEMPLATE = re.compile(
    r"^(The Eagle|Alimentum|Blue Spice|Zizzi) serves (Italian|French|Chinese|English) food "
    r"in the (city centre|riverside) \.$"
)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_learns_the_corpus(tiny_run):
    rows = _rows(tiny_run)
    first_train = next(r for r in rows if r["split"] == "train")
    valid = [r for r in rows if r["split"] == "valid"]
    assert valid[-1]["loss"] < 0.1 * first_train["loss"]  # measured: 2.39 -> 0.13
    for key in ("ce", "prior", "rounding"):  # each term of the default objective is logged
        assert key in valid[-1]
    samples = difflm.load(tiny_run).sample(32, sampler="ddim", steps=20, seed=0)
    # 300 steps are little for a diffusion LM: measured 19% exact
    # template matches (0% for random words); the sentence frame is learned first.
    share = sum(bool(TEMPLATE.match(s)) for s in samples) / len(samples)
    framed = sum(s.endswith(" .") and " food " in s for s in samples) / len(samples)
    assert share >= 0.1 and framed >= 0.75, samples[:5]


def test_resumed_run_follows_the_uninterrupted_curve(tmp_path, toy_corpus):
    config = tiny_config(
        f"lines:{toy_corpus}", "train.steps=24", "train.log_every=4", "train.eval_every=8", "train.checkpoint_every=8"
    )
    Trainer(config, tmp_path / "full", progress=False).run()
    train_interrupted_then_resumed(config, tmp_path / "cut", crash_at=13)  # resumes from step 8
    full, cut = _rows(tmp_path / "full"), _rows(tmp_path / "cut")
    assert [(r["step"], r["split"]) for r in full] == [(r["step"], r["split"]) for r in cut]
    for a, b in zip(full, cut):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)


def test_early_stopping_keeps_the_best_checkpoint_and_stays_stopped(tmp_path, toy_corpus):
    """train.patience: held-out losses 3, 2, 2.5, 2.6 at steps 2, 4, 6, 8 with patience 2
    stop training at step 8 with the run holding step 4's weights; a resumed run trains no more."""
    config = tiny_config(f"lines:{toy_corpus}", "train.steps=20", "train.eval_every=2", "train.patience=2")
    trainer = Trainer(config, tmp_path / "r", progress=False)
    scripted = iter([3.0, 2.0, 2.5, 2.6, 1.0])
    weights_at: dict[int, dict] = {}

    def evaluate() -> dict[str, float]:
        weights_at[trainer.step] = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
        return {"loss": next(scripted)}

    trainer.evaluate = evaluate
    trainer.run()
    assert trainer.step == 8
    state = json.loads((tmp_path / "r" / "train_state.json").read_text())
    assert (state["step"], state["best"], state["stopped"]) == (4, {"loss": 2.0, "step": 4}, True)
    kept = difflm.load(tmp_path / "r").model.state_dict()
    assert all(torch.equal(kept[k], weights_at[4][k]) for k in weights_at[4])
    assert not all(torch.equal(kept[k], weights_at[8][k]) for k in weights_at[8])
    longer = tiny_config(f"lines:{toy_corpus}", "train.steps=40", "train.eval_every=2", "train.patience=2")
    resumed = Trainer(longer, tmp_path / "r", progress=False)
    resumed.run()
    assert resumed.step == 4 and [r["step"] for r in _rows(tmp_path / "r")][-1] <= 4


def test_early_stopping_ends_at_the_best_step_when_the_last_does_not_improve(tmp_path, toy_corpus):
    config = tiny_config(f"lines:{toy_corpus}", "train.steps=6", "train.eval_every=2", "train.patience=5")
    trainer = Trainer(config, tmp_path / "r", progress=False)
    scripted = iter([3.0, 2.0, 2.5])
    trainer.evaluate = lambda: {"loss": next(scripted)}
    trainer.run()
    state = json.loads((tmp_path / "r" / "train_state.json").read_text())
    assert (state["step"], state["stopped"]) == (4, True)


def test_resume_refuses_a_different_model(tmp_path, toy_corpus):
    Trainer(tiny_config(f"lines:{toy_corpus}", "train.steps=2"), tmp_path / "r", progress=False).run()
    with pytest.raises(ValueError, match="model.hidden"):
        Trainer(tiny_config(f"lines:{toy_corpus}", "train.steps=4", "model.hidden=32"), tmp_path / "r", progress=False)


def test_out_dir_that_is_not_a_run_is_refused(tmp_path, toy_corpus):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a difflm run"):
        Trainer(tiny_config(f"lines:{toy_corpus}"), tmp_path / "busy", progress=False)


def test_lr_warms_up_then_decays_to_zero(toy_corpus):
    config = tiny_config(f"lines:{toy_corpus}", "train.steps=100", "train.warmup=10", "train.lr=1.0")
    assert lr_at(0, config.train) == pytest.approx(0.1)
    assert lr_at(9, config.train) == pytest.approx(1.0)
    assert lr_at(55, config.train) == pytest.approx(0.5)
    assert lr_at(100, config.train) == 0.0


def test_batches_cover_each_epoch_once_and_ranks_do_not_overlap():
    seen = torch.cat([batch_indices(step, 5, 20, seed=1, rank=0, world=1) for step in range(4)])
    assert sorted(seen.tolist()) == list(range(20))
    r0, r1 = batch_indices(0, 5, 20, 1, 0, 2), batch_indices(0, 5, 20, 1, 1, 2)
    assert not set(r0.tolist()) & set(r1.tolist())


def test_heldout_loss_does_not_depend_on_the_training_batch_size(toy_corpus):
    # Its fixed noise is drawn batch by batch: with train.batch_size as the held-out batch, a
    # batch-32 (or DDP) run and a batch-64 run were scored on different noise. Measured on E2E:
    # the same weights scored 0.957 and 1.032 that way, a gap that looked like worse training.
    small, large = (tiny_config(f"lines:{toy_corpus}", f"train.batch_size={b}") for b in (3, 64))
    data = prepare_data(small)
    torch.manual_seed(0)
    model = build_model(small, len(data.vocab))
    device = torch.device("cpu")
    assert heldout_loss(model, data.valid, small, device) == heldout_loss(model, data.valid, large, device)


def test_two_process_torchrun_job_trains(tmp_path, toy_corpus):
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "difflm.cli",
        "train",
        "--corpus",
        f"lines:{toy_corpus}",
        "--config",
        str(Path(__file__).parent.parent / "configs" / "tiny.yaml"),
        "--set",
        "train.steps=20",
        "train.eval_every=10",
        "train.log_every=10",
        "data.max_len=16",
        "train.threads=1",
        "--out",
        str(run),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(run)
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20]  # only rank 0 logs
    assert json.loads((run / "train_state.json").read_text())["step"] == 20
    assert difflm.load(run).sample(2, steps=5)


def test_overlong_skip_drops_and_counts_only_what_does_not_fit(tmp_path):
    from difflm.text.dataset import prepare_data

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(["a b c"] * 20 + ["a b c d e f g"] * 10) + "\n")
    data = prepare_data(tiny_config(f"lines:{corpus}", "data.max_len=6", "data.overlong=skip", "data.holdout=5"))
    assert data.report["skipped_overlong"] == 10 and data.report["truncated"] == 0
    assert len(data.train) + len(data.valid) == 20
    with pytest.raises(ValueError, match="no sentence fits data.max_len=4"):
        prepare_data(tiny_config(f"lines:{corpus}", "data.max_len=4", "data.overlong=skip"))
