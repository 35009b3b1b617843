"""What a new user hits when something goes wrong: one line, exit 2, and nothing lost.

Diverging training (a learning rate far too high), an output path that is a file, an
impossible model size, and two trainers on one run directory.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from difflm import checkpoint
from difflm.cli import main
from difflm.loop import TrainingDiverged
from difflm.train import Trainer
from tests.conftest import CONFIGS, tiny_config


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def _train_args(corpus, out, *settings: str) -> list[str]:
    return [
        "train",
        "--corpus",
        f"lines:{corpus}",
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--set",
        "data.max_len=16",
        "train.threads=1",
        *settings,
        "--out",
        str(out),
        "--no-progress",
    ]


def test_a_diverging_learning_rate_stops_training_with_one_line(tmp_path, toy_corpus, capsys):
    run = tmp_path / "run"
    code, err = _cli(
        capsys, *_train_args(toy_corpus, run, "train.lr=1e6", "train.steps=200", "train.checkpoint_every=1000")
    )
    assert code == 2 and len(err.splitlines()) == 1 and "diverged" in err and "nothing was saved" in err, err
    assert not (run / "train_state.json").exists()  # nothing was saved: no NaN weights on disk


def test_nan_keeps_the_last_finite_checkpoint_and_resume_continues_from_it(tmp_path, toy_corpus):
    config = tiny_config(f"lines:{toy_corpus}", "train.steps=10", "train.checkpoint_every=4", "train.eval_every=100")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    real = trainer.batch_loss

    def poisoned():
        loss, terms = real()
        return (loss * float("nan"), terms) if trainer.step == 6 else (loss, terms)

    trainer.batch_loss = poisoned
    with pytest.raises(TrainingDiverged, match="step 7.*checkpoint of step 4"):
        trainer.run()
    assert checkpoint.read_json(tmp_path / "run" / "train_state.json")["step"] == 4
    weights = checkpoint.load_tensors(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "run" / ".lock").exists()  # the lock is released on the way out
    resumed = Trainer(config, tmp_path / "run", progress=False)
    assert resumed.step == 4
    resumed.run()
    assert checkpoint.read_json(tmp_path / "run" / "train_state.json")["step"] == 10


def test_resume_refuses_non_finite_saved_weights(tmp_path, toy_corpus):
    config = tiny_config(f"lines:{toy_corpus}", "train.steps=2")
    Trainer(config, tmp_path / "run", progress=False).run()
    weights = checkpoint.load_tensors(tmp_path / "run" / "model.safetensors")
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    checkpoint.save_tensors(tmp_path / "run" / "model.safetensors", weights)
    with pytest.raises(ValueError, match="not finite"):
        Trainer(config.with_overrides(["train.steps=4"]), tmp_path / "run", progress=False)


def test_out_that_is_a_file_and_a_zero_width_model_exit_2(tmp_path, toy_corpus, capsys):
    (tmp_path / "taken.txt").write_text("mine")
    code, err = _cli(capsys, *_train_args(toy_corpus, tmp_path / "taken.txt"))
    assert code == 2 and len(err.splitlines()) == 1 and "is a file" in err, err
    assert (tmp_path / "taken.txt").read_text() == "mine"
    code, err = _cli(capsys, *_train_args(toy_corpus, tmp_path / "zero", "model.hidden=0"))
    assert code == 2 and len(err.splitlines()) == 1 and "model.hidden" in err, err


def test_a_second_trainer_on_a_locked_run_exits_2_naming_the_first(tmp_path, toy_corpus, capsys):
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live process holds the lock
    try:
        (run / checkpoint.RunLock.NAME).write_text(f"{socket.gethostname()} {other.pid}\n")
        code, err = _cli(capsys, *_train_args(toy_corpus, run, "train.steps=2"))
        assert code == 2 and len(err.splitlines()) == 1 and str(other.pid) in err, err
        assert sorted(p.name for p in run.iterdir()) == [checkpoint.RunLock.NAME]  # nothing of the run was written
    finally:
        other.kill()
        other.wait()
    # Its process gone, the lock is stale: the next trainer takes it over and releases it at the end.
    code, _ = _cli(capsys, *_train_args(toy_corpus, run, "train.steps=2"))
    assert code == 0 and not (run / checkpoint.RunLock.NAME).exists()
    assert json.loads((run / "train_state.json").read_text())["step"] == 2
