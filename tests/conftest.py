"""Shared fixtures: a small corpus written by the test itself and a tiny trained run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from difflm.config import Config, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write_toy_corpus(path: Path, n: int = 400, seed: int = 0, *, mr: bool = False) -> Path:
    """A tiny restaurant corpus with a fixed sentence shape, one sentence per line.

    With `mr`, each line is preceded by its meaning representation in Diffusion-LM's E2E
    format ("name : Zizzi | food : Italian | area : riverside||Zizzi serves ..."): the same
    sentences, read with `e2e:PATH`, carry their slot values.
    """
    rng = random.Random(seed)
    names = ["The Eagle", "Alimentum", "Blue Spice", "Zizzi"]
    foods = ["Italian", "French", "Chinese", "English"]
    areas = ["city centre", "riverside"]
    lines = []
    for _ in range(n):
        name, food, area = rng.choice(names), rng.choice(foods), rng.choice(areas)
        line = f"{name} serves {food} food in the {area} ."
        lines.append(f"name : {name} | food : {food} | area : {area}||{line}" if mr else line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(corpus: str, *overrides: str) -> Config:
    return load_config(
        CONFIGS / "tiny.yaml", [f"data.corpus={corpus}", "data.max_len=16", "train.threads=1", *overrides]
    )


def train_interrupted_then_resumed(config: Config, run_dir: Path, crash_at: int) -> None:
    """Train into run_dir, stop it with Ctrl-C when it reaches step `crash_at`, then run it again (resume)."""
    from difflm.train import Trainer

    interrupted = Trainer(config, run_dir, progress=False)
    real_step = interrupted.train_step

    def crash():
        if interrupted.step == crash_at:
            raise KeyboardInterrupt
        return real_step()

    interrupted.train_step = crash
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    Trainer(config, run_dir, progress=False).run()


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_corpus(tmp_path_factory.mktemp("corpus") / "toy.txt")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, toy_corpus: Path) -> Path:
    """A run directory trained for a few seconds on the toy corpus."""
    from difflm.train import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    torch.set_num_threads(1)
    train(tiny_config(f"lines:{toy_corpus}", "train.steps=300", "train.lr=3e-3"), run, progress=False)
    return run


@pytest.fixture(scope="session")
def toy_e2e_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy corpus with its slot values, in Diffusion-LM's E2E format (`e2e:PATH`)."""
    return write_toy_corpus(tmp_path_factory.mktemp("corpus") / "toy_mr.txt", mr=True)


@pytest.fixture(scope="session")
def slot_run(tmp_path_factory: pytest.TempPathFactory, toy_e2e_corpus: Path) -> Path:
    """A tiny run on the toy corpus conditioned on its slot values (classifier-free guidance), as tiny_run."""
    from difflm.train import train

    run = tmp_path_factory.mktemp("runs") / "slots"
    torch.set_num_threads(1)
    config = tiny_config(
        f"e2e:{toy_e2e_corpus}", "train.steps=300", "train.lr=3e-3", "model.condition=slots", "diffusion.cond_drop=0.1"
    )
    train(config, run, progress=False)
    return run
