"""Shared fixtures: a small corpus written by the test itself and a tiny trained run."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from difflm.config import Config, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write_toy_corpus(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A tiny restaurant corpus with a fixed sentence shape, one sentence per line."""
    rng = random.Random(seed)
    names = ["The Eagle", "Alimentum", "Blue Spice", "Zizzi"]
    foods = ["Italian", "French", "Chinese", "English"]
    areas = ["city centre", "riverside"]
    lines = [f"{rng.choice(names)} serves {rng.choice(foods)} food in the {rng.choice(areas)} ." for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(corpus: str, *overrides: str) -> Config:
    return load_config(CONFIGS / "tiny.yaml", [f"data.corpus={corpus}", "data.max_len=16", "train.threads=1", *overrides])


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
