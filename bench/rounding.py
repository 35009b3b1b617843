"""Readouts at equal CPU time: factorized (Diffusion-LM's per-position argmax) against contextual
rounding, trained on the same corpus for the same time and scored the same way.

    .venv/bin/python bench/rounding.py --corpus grammar --minutes 4 --set data.max_len=24 data.overlong=skip
    .venv/bin/python bench/rounding.py --runs ctx=RUN --teacher TEACHER_RUN --readouts contextual,factorized

Each option trains alone on the machine's threads (one run at a time): its step count is its
steps/s, probed on this machine, × the budget, so every run also completes its learning-rate
decay; the CPU time it took is reported. Each run then writes --n samples with the default
sampler (DDPM 50, τ = 0.1) and its own readout, timed (sentences/s), and is scored by
`difflm.eval.evaluate`: the exact grammar on the bundled corpus; with --teacher, the teacher's
lm-score, the share within the human range and the share below the median human sentence;
the share with a word doubled back to back; distinct-2, self-BLEU and mean length. A share
of n samples has a standard error of at most 0.5/√n. Prints JSON and a markdown table and
writes both under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

import difflm
from difflm.checkpoint import read_json
from difflm.eval.report import evaluate
from difflm.text.dataset import split_sentences
from quality import markdown_table, sample_timed  # bench/ is the script's directory
from recipes import measure_rate

OPTIONS = {"factorized": ["rounding.kind=factorized"], "contextual": ["rounding.kind=contextual"]}
COLUMNS = [
    "grammatical",
    "lm_score",
    "within_human_range",
    "below_human_median",
    "repeated_word",
    "distinct_2",
    "self_bleu",
    "mean_length",
    "sentences_per_s",
]


def score(run: Path, n: int, teacher: difflm.Pipeline | None, rounding: str | None = None) -> dict:
    """Samples of a run with its own readout (or `rounding`), and their scores."""
    pipe = difflm.load(run)
    texts, rate = sample_timed(pipe, n, seed=0, rounding=rounding)
    judge = teacher or pipe
    training, held = split_sentences(judge.config, judge.vocab)
    report = evaluate(
        texts,
        teacher=teacher,
        training=training,
        reference=[" ".join(h) for h in held],
        grammar=pipe.config.data.corpus == "grammar",
    )
    state = read_json(run / "train_state.json")
    return {
        **report,
        "sentences_per_s": rate,
        "steps": state["step"],
        "cpu_minutes": state["cpu_seconds"] / 60,
        "samples": texts[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="grammar")
    parser.add_argument("--config", help="base config file (default: the built-in defaults)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--options", default="factorized,contextual", help=f"of {', '.join(OPTIONS)}")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per option (wall minutes, alone)")
    parser.add_argument(
        "--runs", nargs="+", default=[], metavar="NAME=DIR", help="score these runs instead of training"
    )
    parser.add_argument(
        "--readouts", default="", help="with --runs: read each run these ways, e.g. contextual,factorized"
    )
    parser.add_argument("--teacher", help="an autoregressive run on the same corpus (lm-score, human range)")
    parser.add_argument("--n", type=int, default=128, help="samples per run")
    parser.add_argument("--out", default="bench/out/rounding")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = dict(item.split("=", 1) for item in args.runs)
    base = [f"data.corpus={args.corpus}", *args.overrides]
    for name in [] if runs else args.options.split(","):
        overrides = base + OPTIONS[name]
        steps = int(measure_rate(args.config, overrides, threads=torch.get_num_threads()) * args.minutes * 60)
        run = out / name
        cmd = [
            sys.executable,
            "-m",
            "difflm.cli",
            "train",
            "--out",
            str(run),
            "--no-progress",
            "--set",
            *overrides,
            f"train.steps={steps}",
            f"train.eval_every={steps}",
            f"train.checkpoint_every={steps}",
        ]
        subprocess.run(cmd + (["--config", args.config] if args.config else []), check=True, stdout=subprocess.DEVNULL)
        runs[name] = str(run)
    teacher = difflm.load(args.teacher) if args.teacher else None
    readouts = args.readouts.split(",") if args.readouts else [None]
    result = {
        name + (f" ({readout})" if readout else ""): score(Path(run), args.n, teacher, readout)
        for name, run in runs.items()
        for readout in readouts
    }
    machine = f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    (out / "result.json").write_text(json.dumps({"machine": machine, "n": args.n, "runs": result}, indent=2))
    print(json.dumps({name: {k: v for k, v in r.items() if k != "samples"} for name, r in result.items()}, indent=2))
    columns = [c for c in ["steps", "cpu_minutes", *COLUMNS] if any(c in r for r in result.values())]
    rows = [
        {"run": name, **{c: f"{r[c]:.3g}" if isinstance(r.get(c), float) else r.get(c) for c in columns}}
        for name, r in result.items()
    ]
    table = markdown_table(rows, ["run", *columns])
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
