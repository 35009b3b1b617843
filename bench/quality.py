"""Quality at equal training time: the diffusion LM vs an autoregressive baseline.

    .venv/bin/python bench/quality.py --minutes 8 [--corpus grammar] [--set model.hidden=...]

Trains three runs on one thread each (two at a time): the diffusion LM with the default
recipe, the AR baseline, and a second AR run with another seed that serves as the
teacher for lm-score (so the baseline is not scored by itself). Step budgets are
probed steps/s on a quiet machine × the budget. Then samples `--n` sentences per
setting (DDIM at several step counts, DDPM at 200; the AR baseline with plain sampling)
and evaluates them with `difflm.eval.report.evaluate`: lm-score, and on the grammar
corpus the exact parser's grammatical share and true NLL per token; diversity; novelty.
Writes result.json, table.md and quality_vs_steps.png under --out and prints JSON + table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import difflm
from difflm.eval.plots import draw_metric
from difflm.eval.report import evaluate
from difflm.text.dataset import split_sentences
from recipes import measure_rate, run_parallel  # bench/ is on sys.path when run as a script

DIFFUSION_SETTINGS = [("ddim", 10), ("ddim", 50), ("ddim", 200), ("ddpm", 200)]

# The three runs of the comparison; the teacher is a second AR run with another seed, so
# that the baseline is not scored by itself.
RUNS = {
    "diffusion": [],
    "autoregressive": ["model.kind=autoregressive"],
    "teacher": ["model.kind=autoregressive", "train.seed=1"],
    "masked": ["model.kind=masked"],
    "uniform": ["model.kind=uniform"],
}


def train_equal_time(
    out: Path,
    config_path: str | None,
    base: list[str],
    minutes: float,
    names: tuple[str, ...] = ("diffusion", "autoregressive", "teacher"),
) -> dict[str, list[str]]:
    """Train (or resume) the named `RUNS` under `out` for `minutes` CPU-minutes each, two at a time.

    Step budget = steps/s probed on one quiet thread × the budget. The probes are kept in
    out/plan.json, so a rerun trains the same budgets whatever else the machine does; the
    teacher trains at the AR baseline's rate. Returns each run's overrides (train.steps last).
    """
    plan_path = out / "plan.json"
    rates = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    kinds = {name: "autoregressive" if name == "teacher" else name for name in names}
    for kind in dict.fromkeys(kinds.values()):
        if kind not in rates:
            rates[kind] = measure_rate(config_path, base + RUNS[kind])
            plan_path.write_text(json.dumps(rates, indent=2))
    plans = {
        name: base + RUNS[name] + [f"train.steps={max(1, int(rates[kinds[name]] * minutes * 60))}"] for name in names
    }
    run_parallel(out, config_path, plans, parallel=2)
    return plans


def sample_timed(pipe: difflm.Pipeline, n: int, *, seed: int = 0, **options) -> tuple[list[str], float]:
    """(n sentences from `seed`, sentences/s)."""
    start = time.perf_counter()
    texts = pipe.sample(n, seed=seed, **options)
    return texts, n / (time.perf_counter() - start)


def plot(result: dict, out: Path, metric: str) -> None:
    from difflm.eval.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_metric(ax, result["rows"], metric)
    ax.set_xlabel("sampling steps (denoiser evaluations)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    """A markdown table of `cols`; a value a row lacks (or holds as None) is left blank."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="grammar")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--out", default="bench/out/quality")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    base = [f"data.corpus={args.corpus}", "train.threads=1", *args.overrides]
    plans = train_equal_time(out, args.config, base, args.minutes)

    grammar = args.corpus == "grammar"
    teacher = difflm.load(out / "teacher")
    training, heldout = split_sentences(teacher.config, teacher.vocab)
    human = [" ".join(tokens) for tokens in heldout][: args.n]

    def row(model: str, sampler: str, steps: int, texts: list[str], speed: float | None) -> dict:
        report = evaluate(texts, teacher=teacher, training=training, reference=human, grammar=grammar)
        return {
            "model": model,
            "sampler": sampler,
            "steps": steps,
            "sentences_per_s": speed,
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()},
            "examples": texts[:5],
        }

    rows = [row("human", "-", 0, human, None)]
    ar = difflm.load(out / "autoregressive")
    texts, speed = sample_timed(ar, args.n)
    rows.append(row("autoregressive", "ancestral", ar.config.data.max_len, texts, round(speed, 1)))
    diffusion = difflm.load(out / "diffusion")
    for sampler, steps in DIFFUSION_SETTINGS:
        texts, speed = sample_timed(diffusion, args.n, sampler=sampler, steps=steps)
        rows.append(row("diffusion", sampler, steps, texts, round(speed, 1)))
    result = {
        "corpus": args.corpus,
        "minutes": args.minutes,
        "steps": {k: p[-1] for k, p in plans.items()},
        "rows": rows,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    metric = "grammatical" if grammar else "lm_score"
    plot(result, out / "quality_vs_steps.png", metric)
    cols = (
        ["model", "sampler", "steps", "sentences_per_s", "lm_score"]
        + (["grammatical", "grammar_nll_per_token"] if grammar else [])
        + ["distinct_2", "self_bleu", "novelty", "mean_length"]
    )
    table = markdown_table(rows, cols)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
