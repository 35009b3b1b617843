"""Fluency options at equal CPU time, trained on the same corpus for the same time and scored
the same way: factorized (Diffusion-LM's per-position argmax), contextual rounding,
contextual rounding with length anchors and length-bucketed batches ("anchored"), and that
with half the rows noised left to right ("swept", AR-Diffusion; read with --samplers sweep).

    .venv/bin/python bench/rounding.py --corpus grammar --minutes 4 --set data.max_len=24 data.overlong=skip
    .venv/bin/python bench/rounding.py --runs ctx=RUN --teacher TEACHER_RUN --readouts contextual,factorized

Each option trains alone on the machine's threads (one run at a time): its step count is its
steps/s, probed on this machine, × the budget, so every run also completes its learning-rate
decay; the CPU time it took is reported. Each run then writes --n samples with the default
sampler (DDPM 50, τ = 0.1, or each of --temperatures) and its own readout (or the decoder's pick
of each of --best-of draws, or of --reads readings of each final latent), timed (sentences/s), and is scored by
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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import torch

import difflm
from difflm.checkpoint import read_json
from difflm.eval.report import evaluate
from difflm.model.anchors import anchors_of
from difflm.model.denoiser import Denoiser
from difflm.sampling.contextual import round_in_context
from difflm.text.dataset import split_sentences
from quality import markdown_table, sample_timed  # bench/ is the script's directory
from recipes import measure_rate

T = TypeVar("T")

OPTIONS = {
    "factorized": ["rounding.kind=factorized"],
    "contextual": ["rounding.kind=contextual"],
    "anchored": ["rounding.kind=contextual", "diffusion.length_anchors=true", "train.length_pool=16"],
    "swept": [
        "rounding.kind=contextual",
        "diffusion.length_anchors=true",
        "train.length_pool=16",
        "diffusion.sweep=0.5",
    ],
}
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


def score(
    run: Path,
    n: int,
    teacher: difflm.Pipeline | None,
    rounding: str | None = None,
    temperature: float | None = None,
    t_sample: float | None = None,
    sampler: str | None = None,
    best_of: int | None = None,
    reads: int | None = None,
) -> dict:
    """Samples of a run with its own readout (or `rounding`) at x̂0 temperature τ and reading
    time t_d = t_sample, with `sampler`, each the decoder's pick of `best_of` draws and of
    `reads` readings of each (None: the pipeline's and the run's), and their scores."""
    pipe = difflm.load(run)
    if t_sample is not None:
        pipe.config = replace(pipe.config, rounding=replace(pipe.config.rounding, t_sample=t_sample))
    chosen = {k: v for k, v in {"sampler": sampler, "best_of": best_of, "reads": reads}.items() if v}
    texts, rate = sample_timed(pipe, n, seed=0, rounding=rounding, temperature=temperature, **chosen)
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
        "samples": texts[:40],
    }


def faithfulness(run: Path, t_ds: list[float], reads: int = 1, n: int = 128) -> dict[float, dict[str, float]]:
    """Does the decoder write what the latent says? The clean latents EMB(w) of n held-out
    sentences, decoded at each t_d (the most probable of `reads` readings): the share written
    back word for word, the share of their words kept, and the share of rows that, given
    another row's latent, write that row's."""
    pipe = difflm.load(run)
    assert isinstance(pipe.model, Denoiser)
    _, held = split_sentences(pipe.config, pipe.vocab)
    held = [h for h in held if len(h) <= pipe.config.data.max_len - 2][:n]
    ids, _ = pipe.vocab.encode_batch(held, pipe.config.data.max_len)
    x0 = pipe.model.embedding(ids).detach()
    anchors = anchors_of(ids) if pipe.model.lengths is not None else None
    texts = [" ".join(h) for h in held]
    result = {}
    for t_d in t_ds:

        def read(latents: torch.Tensor, rows: torch.Tensor | None, t_d: float = t_d) -> list[str]:
            tokens, _ = round_in_context(
                pipe.model, latents, t_d=t_d, generator=torch.Generator().manual_seed(0), anchors=rows, reads=reads
            )
            return pipe.decode(tokens)

        out = read(x0, anchors)
        swapped = read(x0.roll(1, 0), None if anchors is None else anchors.roll(1, 0))
        result[t_d] = {
            "word_for_word": sum(o == h for o, h in zip(out, texts)) / len(texts),
            "words_kept": sum(len(set(o.split()) & set(h)) / len(set(h)) for o, h in zip(out, held)) / len(held),
            "follows_another_row": sum(o == h for o, h in zip(swapped, texts[-1:] + texts[:-1])) / len(texts),
        }
    return result


def each(values: str, kind: Callable[[str], T]) -> list[T | None]:
    """A comma-separated option's values, or [None] (the run's own setting) when it is empty."""
    return [kind(value) for value in values.split(",")] if values else [None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="grammar")
    parser.add_argument("--config", help="base config file (default: the built-in defaults)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--options", default=",".join(OPTIONS), help=f"of {', '.join(OPTIONS)}")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per option (wall minutes, alone)")
    parser.add_argument(
        "--runs", nargs="+", default=[], metavar="NAME=DIR", help="score these runs instead of training"
    )
    parser.add_argument(
        "--readouts", default="", help="with --runs: read each run these ways, e.g. contextual,factorized"
    )
    parser.add_argument(
        "--temperatures",
        default="",
        help="sample at each of these x̂0 temperatures τ, e.g. 0.1,1 (default: the pipeline's)",
    )
    parser.add_argument(
        "--t-sample", default="", help="read at each of these times t_d, e.g. 0.4,0.6 (default: the run's)"
    )
    parser.add_argument(
        "--samplers", default="", help="sample with each of these samplers, e.g. ddpm,sweep (default: the pipeline's)"
    )
    parser.add_argument(
        "--best-of",
        default="",
        help="keep the decoder's pick of each of these numbers of draws, e.g. 1,4 (default: the run's)",
    )
    parser.add_argument(
        "--reads",
        default="",
        help="keep the decoder's pick of each of these numbers of readings of each final latent, e.g. 1,8 "
        "(default: the run's)",
    )
    parser.add_argument(
        "--faithfulness", action="store_true", help="also decode held-out latents at each --t-sample (contextual runs)"
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
    readouts, samplers = each(args.readouts, str), each(args.samplers, str)
    temperatures, t_ds = each(args.temperatures, float), each(args.t_sample, float)
    picks, readings = each(args.best_of, int), each(args.reads, int)
    result = {
        name
        + (f" ({readout})" if readout else "")
        + (f" {sampler}" if sampler else "")
        + (f" τ={tau:g}" if tau is not None else "")
        + (f" t_d={t_d:g}" if t_d is not None else "")
        + (f" best of {k}" if k is not None else "")
        + (f" reads {r}" if r is not None else ""): score(Path(run), args.n, teacher, readout, tau, t_d, sampler, k, r)
        for name, run in runs.items()
        for readout in readouts
        for sampler in samplers
        for tau in temperatures
        for t_d in t_ds
        for k in picks
        for r in readings
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
    if args.faithfulness:
        faithful = {
            f"{name} reads {r or 1}": faithfulness(Path(run), [t for t in t_ds if t is not None] or [0.2, 0.4], r or 1)
            for name, run in runs.items()
            for r in readings
        }
        (out / "faithfulness.json").write_text(json.dumps(faithful, indent=2))
        rows = [
            {"run": name, "t_d": t_d, **{k: f"{v:.3f}" for k, v in r.items()}}
            for name, f in faithful.items()
            for t_d, r in f.items()
        ]
        table += "\n\n" + markdown_table(rows, ["run", "t_d", "word_for_word", "words_kept", "follows_another_row"])
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
