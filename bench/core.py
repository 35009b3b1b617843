"""Core speed benchmark: training throughput and sampling speed of the default config.

    .venv/bin/python bench/core.py [--set model.hidden=256 ...] [--threads 2]

Prints JSON and a markdown table. Speed does not depend on the weights, so the model is
freshly initialised; the data is the bundled grammar corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

from difflm.config import load_config
from difflm.pipeline import Pipeline
from difflm.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], help="config overrides")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--n", type=int, default=64, help="sentences per sampling batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(
        None, ["train.log_every=1000000", "train.eval_every=1000000", "train.checkpoint_every=1000000"] + args.overrides
    )

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False)
        for _ in range(3):  # warm-up: allocator, autotuning
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(args.train_steps):
            trainer.train_step()
        seconds = time.perf_counter() - start
        pipe = Pipeline(trainer.config, trainer.data.vocab, trainer.ema)

    steps_per_s = args.train_steps / seconds
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} threads",
        "config": {
            "model": config.model.__dict__,
            "max_len": config.data.max_len,
            "batch_size": config.train.batch_size,
            "T": config.diffusion.steps,
        },
        "train_steps_per_s": round(steps_per_s, 3),
        "train_tokens_per_s": round(steps_per_s * config.train.batch_size * config.data.max_len),
        "sampling": {},
    }
    for steps in (200, 50, 10):
        pipe.generate(8, steps=2)  # warm-up
        start = time.perf_counter()
        pipe.generate(args.n, sampler="ddim", steps=steps, seed=0)
        seconds = time.perf_counter() - start
        result["sampling"][steps] = {
            "sentences_per_s": round(args.n / seconds, 2),
            "seconds_per_batch": round(seconds, 3),
        }

    print(json.dumps(result, indent=2))
    print()
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| training steps/s (batch {config.train.batch_size} × {config.data.max_len} tokens) "
        f"| {result['train_steps_per_s']} |"
    )
    print(f"| training tokens/s | {result['train_tokens_per_s']} |")
    for steps, row in result["sampling"].items():
        print(f"| sampling sentences/s, DDIM {steps} steps (batch {args.n}) | {row['sentences_per_s']} |")


if __name__ == "__main__":
    main()
