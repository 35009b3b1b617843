"""Head-to-head sampling speed: the AR baseline against diffusion samplers, over several seeds.

    .venv/bin/python bench/speed.py --ar runs/final/ar --run distilled=runs/kd:1,2 [--run ddpm=RUN:2,8] \
        [--n 512] [--seeds 8]

The AR baseline's time depends on the seed: it decodes until the longest sentence of the
batch ends (≤ L tokens), so one seed can make it 1.8× slower than another. Each seed s
times every row on the same n sentences' worth of work, on one thread, the rows
interleaved so that machine noise reaches them alike; the table gives the mean, the
median, the range, and on how many seeds each row beat the AR baseline. Prints JSON and a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import difflm
from difflm.sampling import get_sampler
from quality import markdown_table, sample_timed  # bench/ is on sys.path


def parse_run(spec: str) -> tuple[str, Path, list[int]]:
    """SAMPLER=RUN:K1,K2 -> (sampler, run, step counts)."""
    name, sep, rest = spec.partition("=")
    run, sep2, steps = rest.rpartition(":")
    if not sep or not sep2 or not run:
        raise argparse.ArgumentTypeError(f"expected SAMPLER=RUN:K1,K2, got {spec!r}")
    try:
        get_sampler(name)
        counts = [int(k) for k in steps.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{spec!r}: {err}") from None
    return name, Path(run), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ar", type=Path, required=True, help="autoregressive baseline run")
    parser.add_argument(
        "--run",
        type=parse_run,
        action="append",
        required=True,
        metavar="SAMPLER=RUN:K1,K2",
        help="a diffusion-family run, its sampler and step counts (repeatable)",
    )
    parser.add_argument("--n", type=int, default=512, help="sentences per timed call")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..S-1, each timing every row once")
    args = parser.parse_args()
    torch.set_num_threads(1)

    # label -> (pipeline, sampling options)
    rows = {"autoregressive": (difflm.load(args.ar), {})}
    for name, run, counts in args.run:
        pipe = difflm.load(run)
        for k in counts:
            rows[f"{name} {k} ({run.name})"] = (pipe, {"sampler": name, "steps": k})
    for pipe, options in rows.values():  # warm-up
        pipe.sample(args.n, seed=10_000, **options)
    speeds: dict[str, list[float]] = {label: [] for label in rows}
    for seed in range(args.seeds):
        for label, (pipe, options) in rows.items():
            speeds[label].append(sample_timed(pipe, args.n, seed=seed, **options)[1])
        print(json.dumps({"seed": seed, **{k: round(v[-1], 1) for k, v in speeds.items()}}), flush=True)

    base = speeds["autoregressive"]
    table = [
        {
            "sampler": label,
            "mean": round(statistics.mean(v), 1),
            "median": round(statistics.median(v), 1),
            "min": round(min(v), 1),
            "max": round(max(v), 1),
            "faster_than_ar": "–" if label == "autoregressive" else f"{sum(a > b for a, b in zip(v, base))}/{len(v)}",
        }
        for label, v in speeds.items()
    ]
    print(json.dumps({"n": args.n, "seeds": args.seeds, "threads": 1, "rows": table, "per_seed": speeds}, indent=2))
    print(markdown_table(table, ["sampler", "mean", "median", "min", "max", "faster_than_ar"]))


if __name__ == "__main__":
    main()
