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
from difflm.eval.report import evaluate
from difflm.train import split_sentences
from recipes import measure_rate, run_parallel  # bench/ is on sys.path when run as a script

DIFFUSION_SETTINGS = [("ddim", 10), ("ddim", 50), ("ddim", 200), ("ddpm", 200)]


def sample_timed(pipe: difflm.Pipeline, n: int, **options) -> tuple[list[str], float]:
    start = time.perf_counter()
    texts = pipe.sample(n, seed=0, **options)
    return texts, n / (time.perf_counter() - start)


def plot(result: dict, out: Path, metric: str) -> None:
    from difflm.eval.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in ("ddim", "ddpm"):
        rows = [(r["steps"], r[metric]) for r in result["rows"] if r["model"] == "diffusion" and r["sampler"] == sampler]
        if rows:
            ax.plot(*zip(*rows), marker="o", label=f"diffusion, {sampler.upper()}")
    for row in result["rows"]:
        if row["model"] != "diffusion":
            ax.axhline(row[metric], linestyle="--", color="gray" if row["model"] == "human" else "C3", label=row["model"])
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps (denoiser evaluations)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


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
    runs = {
        "diffusion": base,
        "autoregressive": base + ["model.kind=autoregressive"],
        "teacher": base + ["model.kind=autoregressive", "train.seed=1"],
    }
    plan_path = out / "plan.json"
    rates = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    for name in ("diffusion", "autoregressive"):
        if name not in rates:
            rates[name] = measure_rate(args.config, runs[name])
            plan_path.write_text(json.dumps(rates, indent=2))
    rates["teacher"] = rates["autoregressive"]
    plans = {name: runs[name] + [f"train.steps={max(1, int(rates[name] * args.minutes * 60))}"] for name in runs}
    run_parallel(out, args.config, plans, parallel=2)

    grammar = args.corpus == "grammar"
    teacher = difflm.load(out / "teacher")
    training, heldout = split_sentences(teacher.config, teacher.vocab)
    human = [" ".join(tokens) for tokens in heldout][: args.n]

    def row(model: str, sampler: str, steps: int, texts: list[str], speed: float | None) -> dict:
        report = evaluate(texts, teacher=teacher, training=training, grammar=grammar)
        return {"model": model, "sampler": sampler, "steps": steps, "sentences_per_s": speed,
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}, "examples": texts[:5]}

    rows = [row("human", "-", 0, human, None)]
    ar = difflm.load(out / "autoregressive")
    texts, speed = sample_timed(ar, args.n)
    rows.append(row("autoregressive", "ancestral", ar.config.data.max_len, texts, round(speed, 1)))
    diffusion = difflm.load(out / "diffusion")
    for sampler, steps in DIFFUSION_SETTINGS:
        texts, speed = sample_timed(diffusion, args.n, sampler=sampler, steps=steps)
        rows.append(row("diffusion", sampler, steps, texts, round(speed, 1)))
    result = {"corpus": args.corpus, "minutes": args.minutes, "steps": {k: p[-1] for k, p in plans.items()}, "rows": rows}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    metric = "grammatical" if grammar else "lm_score"
    plot(result, out / "quality_vs_steps.png", metric)
    cols = ["model", "sampler", "steps", "sentences_per_s", "lm_score"] + (["grammatical", "grammar_nll_per_token"] if grammar else []) + ["distinct_2", "self_bleu", "novelty", "mean_length"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
