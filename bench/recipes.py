"""Recipe comparison at equal CPU time: the paper's objective vs its known improvements.

    .venv/bin/python bench/recipes.py --corpus e2e:A.txt,B.txt --minutes 12 \
        --recipes paper,selfcond,logits,logits_selfcond [--parallel 2] [--config configs/paper.yaml]

Each recipe trains with one thread (`--parallel` of them at once on separate cores) for
the same CPU time: its step count is its steps/s, probed on one thread of a quiet
machine, × the budget, so every run also completes its learning-rate decay; the wall
time a run took under load is reported beside it. Quality is judged from samples by an
independent Kneser-Ney trigram LM fitted on the same training split (perplexity, lower
is better; the held-out human sentences give the reference row), plus diversity and
novelty. Prints JSON and a markdown table; writes both under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import difflm
from difflm.config import load_config
from difflm.eval.diversity import distinct_n, length_stats, novelty
from difflm.eval.ngram import KneserNeyTrigram
from difflm.text.dataset import split_sentences
from difflm.train import Trainer

RECIPES = {
    "paper": [],
    "selfcond": ["model.self_condition=true"],
    "logits": ["model.predict=logits", "model.normalize_embeddings=true"],
    "logits_selfcond": ["model.predict=logits", "model.normalize_embeddings=true", "model.self_condition=true"],
    "x0_norm": ["model.normalize_embeddings=true"],
    "x0_norm_selfcond": ["model.normalize_embeddings=true", "model.self_condition=true"],
}


def measure_rate(config_path: str | None, overrides: list[str], probe_steps: int = 12, threads: int = 1) -> float:
    """Training steps/s of a recipe on `threads` threads (after two warm-up steps)."""
    torch.set_num_threads(threads)
    config = load_config(
        config_path, overrides + ["train.log_every=100000", "train.eval_every=100000", "train.checkpoint_every=100000"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False)
        trainer.train_step(), trainer.train_step()
        start = time.perf_counter()
        for _ in range(probe_steps):
            trainer.train_step()
        return probe_steps / (time.perf_counter() - start)


def train_run(run: Path, config_path: str | None, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", "difflm.cli", "train", "--out", str(run), "--no-progress", "--set", *overrides]
    if config_path:
        cmd += ["--config", config_path]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)


def run_parallel(out: Path, config_path: str | None, plans: dict[str, list[str]], parallel: int) -> None:
    """Train (or resume, or skip if finished) every planned run, `parallel` at a time."""
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda name: train_run(out / name, config_path, plans[name]), plans))


def judge(run: Path, n: int, judge_lm: KneserNeyTrigram, training: list[tuple[str, ...]]) -> dict:
    pipe = difflm.load(run)
    rows = {}
    for sampler, steps in (("ddim", 50), ("ddpm", 200)):
        # sc_guidance=1: every recipe is read by the same sampling rule, one evaluation per step
        # (self-conditioned runs would otherwise get self-conditioning guidance by default).
        texts = pipe.sample(n, sampler=sampler, steps=steps, seed=0, sc_guidance=1.0)
        tokens = [t.split() for t in texts]
        rows[f"{sampler}{steps}"] = {
            "judge_ppl": round(judge_lm.perplexity(tokens), 2),
            "distinct_2": round(distinct_n(tokens, 2), 3),
            "novelty": round(novelty(tokens, training), 3),
            "mean_len": round(length_stats(tokens)["mean"], 1),
            "examples": texts[:10],
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="grammar")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    parser.add_argument("--recipes", default="paper,selfcond,logits")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--n", type=int, default=256, help="samples per recipe")
    parser.add_argument("--out", default="bench/out/recipes")
    parser.add_argument("--judge-only", action="store_true", help="skip training; judge the runs already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = [f"data.corpus={args.corpus}", "train.threads=1", *args.overrides]
    names = args.recipes.split(",")
    unknown = set(names) - set(RECIPES)
    if unknown:
        parser.error(f"unknown recipe(s) {sorted(unknown)}; known: {sorted(RECIPES)}")

    # Rates are probed once on a quiet machine and kept in plan.json: a rerun (or a resume
    # after an interruption) trains the same step budgets whatever else the machine does.
    plan_path = out / "plan.json"
    rates = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    if not args.judge_only:
        plans = {}
        for name in names:
            if name not in rates:
                rates[name] = measure_rate(args.config, base + RECIPES[name])
                plan_path.write_text(json.dumps(rates, indent=2))
            steps = max(1, int(rates[name] * args.minutes * 60))
            plans[name] = base + RECIPES[name] + [f"train.steps={steps}"]
            print(f"{name}: {rates[name]:.2f} steps/s on one thread -> {steps} steps", flush=True)
        run_parallel(out, args.config, plans, args.parallel)

    train_sentences, human = split_sentences(load_config(args.config, base))
    judge_lm = KneserNeyTrigram(train_sentences)
    result = {
        "corpus": args.corpus,
        "minutes": args.minutes,
        "reference_judge_ppl": round(judge_lm.perplexity(human), 2),
        "recipes": {},
    }
    for name in names:
        state = json.loads((out / name / "train_state.json").read_text())
        valid = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        result["recipes"][name] = {
            "steps_per_s": round(rates[name], 2),
            "steps": state["step"],
            "budget_minutes": round(state["step"] / rates[name] / 60, 1),
            "wall_minutes": round(state["elapsed"] / 60, 1),
            "final_valid": {k: round(v, 4) for k, v in valid[-1].items() if isinstance(v, float)},
            **judge(out / name, args.n, judge_lm, train_sentences),
        }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    lines = [
        "| recipe | steps/s | steps | judge ppl DDIM-50 | judge ppl DDPM-200 | distinct-2 | novelty |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["recipes"].items():
        lines.append(
            f"| {name} | {r['steps_per_s']} | {r['steps']} | {r['ddim50']['judge_ppl']} | {r['ddpm200']['judge_ppl']} "
            f"| {r['ddim50']['distinct_2']} | {r['ddim50']['novelty']} |"
        )
    lines.append(f"| human held-out text | | | {result['reference_judge_ppl']} | | | |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
