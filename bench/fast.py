"""Fast sampling: quality and speed against the number of denoiser evaluations (NFE).

    .venv/bin/python bench/fast.py --diffusion RUN --ar RUN --teacher RUN [--masked RUN] [--uniform RUN] \
        [--extra shortcut=RUN --extra meanflow=RUN ...] [--nfe 1,2,4,8,16,50,200] [--n 256]
    .venv/bin/python bench/fast.py --train-minutes 6 [--corpus grammar] [--set ...]

A masked diffusion run (`--masked`, `model.kind=masked`) is sampled with each masked sampler
(ancestral, confidence, gibbs) at every NFE as its step budget, and a uniform-noise run (`--uniform`)
with each uniform sampler (ancestral, psi); the NFE column counts the network calls made (the masked
ancestral sampler skips a call when a step reveals nothing). Their word temperatures are
each run's default, or every one of `--word-temperature`.

The diffusion run is sampled with DDPM, DDIM and DPM-Solver++(2M) at every NFE (for them
steps = NFE), on every time grid of `--grids` and at every x̂0 temperature of
`--temperature` (default: the pipeline's) and every self-conditioning guidance scale of
`--sc-guidance` (default 1, none; given explicitly, as the pipeline's default on a
self-conditioned run is 2; a scale ≠ 1 makes two evaluations per step after the first, and
the NFE column counts them). Each `--extra NAME=RUN` (a one- or few-step
model; NAME may repeat) is sampled with the sampler registered as NAME at the NFEs it accepts; an NFE whose
sampler raises ValueError is skipped and listed. The AR baseline (`model.kind=autoregressive`)
samples the same number of sentences, left to right. `--train-minutes M` trains whichever
of the diffusion run, the AR baseline and the teacher is not given, as bench/quality.py
does (M CPU-minutes each, into --out/NAME).

Every row: `--n` sentences from seed 0, timed on one thread (sentences/s, including
decoding; a 2-sentence warm-up first), then `difflm.eval.report.evaluate`: grammatical
share by the exact parser (grammar corpus), lm-score under the teacher (Diffusion-LM's
protocol) and the share within the human range (`evaluate`), distinct-2, self-BLEU, mean length. Prints JSON and a
markdown table; writes
result.json, table.md and quality_vs_nfe.png (log NFE axis; AR and human text as
horizontal lines) under --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

import difflm
from difflm.eval.plots import plot_quality_vs_nfe
from difflm.eval.report import evaluate
from difflm.sampling import TOKEN_SAMPLERS, get_sampler
from difflm.sampling.grid import GRIDS
from difflm.sampling.rounding import SAMPLING_TEMPERATURE
from difflm.text.dataset import split_sentences
from quality import markdown_table, sample_timed, train_equal_time  # bench/ is on sys.path

DIFFUSION_SAMPLERS = ("ddpm", "ddim", "dpm++2m")
NFES = (1, 2, 4, 8, 16, 50, 200)
COLUMNS = [
    "model",
    "sampler",
    "nfe",
    "sentences_per_s",
    "grammatical",
    "lm_score",
    "within_human_range",
    "below_human_median",
    "repeated_word",
    "distinct_2",
    "self_bleu",
    "mean_length",
]


def generate_timed(pipe: difflm.Pipeline, n: int, sampler: str, steps: int, **options) -> tuple[list[str], float, int]:
    """(texts, sentences/s, NFE per sentence) of n sentences from seed 0, after a 2-sentence warm-up.

    Raises:
        ValueError: the sampler does not accept `steps` (raised by the warm-up, before the timed run).
    """
    pipe.generate(2, sampler=sampler, steps=steps, seed=1, **options)
    start = time.perf_counter()
    output = pipe.generate(n, sampler=sampler, steps=steps, seed=0, **options)
    texts = pipe.decode(output.tokens)
    return texts, n / (time.perf_counter() - start), output.nfe


def parse_extra(spec: str) -> tuple[str, Path]:
    name, sep, run = spec.partition("=")
    if not sep or not name or not run:
        raise argparse.ArgumentTypeError(f"expected NAME=RUN, got {spec!r}")
    try:
        get_sampler(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name, Path(run)


def parse_nonnegative(spec: str, cast: type = float) -> list:
    """Comma-separated numbers ≥ 0 (integers with cast=int)."""
    try:
        values = [cast(v) for v in spec.split(",")]
    except ValueError:
        kind = "integers" if cast is int else "numbers"
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got {spec!r}") from None
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"values must be ≥ 0, got {min(values)}")
    return values


def parse_nfes(spec: str) -> list[int]:
    try:
        nfes = sorted({int(v) for v in spec.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {spec!r}") from None
    if nfes[0] < 1:
        raise argparse.ArgumentTypeError(f"NFE must be ≥ 1, got {nfes[0]}")
    return nfes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusion", type=Path, help="diffusion run: DDPM, DDIM and DPM-Solver++ at every NFE")
    parser.add_argument("--ar", type=Path, help="autoregressive baseline run")
    parser.add_argument("--masked", type=Path, help="masked diffusion run: each masked sampler at every NFE")
    parser.add_argument("--uniform", type=Path, help="uniform-noise diffusion run: its sampler at every NFE")
    parser.add_argument(
        "--word-temperature",
        type=parse_nonnegative,
        default=[None],
        metavar="TAU,...",
        help="comma-separated word temperatures of the masked and uniform runs (default: each run's own)",
    )
    parser.add_argument("--teacher", type=Path, help="autoregressive run scoring lm-score")
    parser.add_argument(
        "--extra",
        type=parse_extra,
        action="append",
        default=[],
        metavar="NAME=RUN",
        help="a run sampled with the sampler registered as NAME (repeatable)",
    )
    parser.add_argument("--nfe", type=parse_nfes, default=list(NFES), help="comma-separated NFEs")
    parser.add_argument("--n", type=int, default=256, help="sentences per row")
    parser.add_argument(
        "--temperature",
        type=parse_nonnegative,
        default=[SAMPLING_TEMPERATURE],
        help="comma-separated x̂0 temperatures, each a set of rows (1 = the model's own x̂0)",
    )
    parser.add_argument(
        "--sc-guidance",
        type=parse_nonnegative,
        default=[1.0],
        metavar="W,...",
        help="comma-separated self-conditioning guidance scales, each a set of rows (1 = none)",
    )
    parser.add_argument(
        "--reads",
        type=lambda spec: parse_nonnegative(spec, int),
        default=[None],
        metavar="R,...",
        help="masked and uniform runs with a contextual decoder (rounding.discrete): comma-separated readings, "
        "each a set of rows; 0 = the sampler's own words (default: the run's)",
    )
    parser.add_argument(
        "--grids",
        type=lambda spec: spec.split(","),
        default=["time"],
        help=f"comma-separated time grids of the diffusion samplers ({', '.join(GRIDS)})",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/fast"))
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        metavar="M",
        help="train the missing diffusion/AR/teacher runs, M CPU-minutes each, into --out",
    )
    parser.add_argument("--corpus", default="grammar", help="corpus of the runs --train-minutes trains")
    parser.add_argument("--config", default=None, help="config of the runs --train-minutes trains")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], help="overrides for --train-minutes")
    args = parser.parse_args()
    if unknown := set(args.grids) - set(GRIDS):
        parser.error(f"unknown grid(s) {', '.join(sorted(unknown))}; valid: {', '.join(GRIDS)}")
    if args.n < 2:
        parser.error("--n must be ≥ 2 (self-BLEU compares sentences)")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    runs = {
        "diffusion": args.diffusion,
        "autoregressive": args.ar,
        "teacher": args.teacher,
        "masked": args.masked,
        "uniform": args.uniform,
    }
    missing = tuple(name for name, run in runs.items() if run is None)
    if args.train_minutes is not None and missing:
        base = [f"data.corpus={args.corpus}", "train.threads=1", *args.overrides]
        train_equal_time(args.out, args.config, base, args.train_minutes, missing)
        runs.update({name: args.out / name for name in missing})
    if all(runs[name] is None for name in runs if name != "teacher") and not args.extra:
        parser.error(
            "nothing to evaluate: give --diffusion, --ar, --masked, --uniform, --extra NAME=RUN or --train-minutes"
        )

    pipes = {name: difflm.load(run) for name, run in runs.items() if run is not None}
    # An extra's rows are labelled by its sampler, and by its run directory too when two share a sampler.
    names = [name for name, _ in args.extra]
    labels = [name if names.count(name) == 1 else f"{name} ({run.name})" for name, run in args.extra]
    extras = [(label, name, difflm.load(run)) for label, (name, run) in zip(labels, args.extra)]
    teacher = pipes.get("teacher")
    # The corpus split (novelty, human row) and whether the exact parser judges: from the first run at hand.
    reference = next(iter(pipes.values())) if pipes else extras[0][2]
    training, heldout = split_sentences(reference.config, reference.vocab)
    grammar = reference.config.data.corpus == "grammar"
    human = [" ".join(s) for s in heldout][: args.n]

    def row(model: str, sampler: str, nfe: int | str, texts: list[str], speed: float | None) -> dict:
        report = evaluate(texts, teacher=teacher, training=training, reference=human, grammar=grammar)
        return {
            "model": model,
            "sampler": sampler,
            "nfe": nfe,
            "sentences_per_s": None if speed is None else round(speed, 1),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()},
            "examples": texts[:3],
        }

    rows = [row("human", "-", "-", human, None)]
    skipped = []
    if "autoregressive" in pipes:
        ar = pipes["autoregressive"]
        sample_timed(ar, 2)  # warm-up
        texts, speed = sample_timed(ar, args.n)
        rows.append(row("autoregressive", "ancestral", ar.config.data.max_len, texts, speed))
        print(f"autoregressive: {speed:.1f} sentences/s", flush=True)
    # (model, pipe, sampler, grid); grid None: a sampler without one (the one/few-step models')
    jobs = [
        ("diffusion", pipes["diffusion"], s, g) for s in DIFFUSION_SAMPLERS for g in args.grids if "diffusion" in pipes
    ]
    jobs += [(label, pipe, name, None) for label, name, pipe in extras]
    for (model, pipe, sampler, grid), tau, w in itertools.product(jobs, args.temperature, args.sc_guidance):
        label = (
            sampler
            + ("" if grid in (None, "time") else f" {grid}")
            + ("" if tau == 1 else f" τ={tau:g}")
            + ("" if w == 1 else f" sc-guidance {w:g}")
        )
        options = {"temperature": tau} | ({} if grid is None else {"grid": grid}) | {"sc_guidance": w}
        for steps in args.nfe:
            try:
                texts, speed, nfe = generate_timed(pipe, args.n, sampler, steps, **options)
            except ValueError as err:
                skipped.append({"model": model, "sampler": label, "steps": steps, "reason": str(err)})
                print(f"{model}, {label}, {steps} steps: skipped ({err})", flush=True)
                continue
            rows.append(row(model, label, nfe, texts, speed))
            print(
                f"{model}, {label}, NFE {nfe}: {speed:.1f} sentences/s, "
                f"grammatical {rows[-1].get('grammatical', '-')}, lm-score {rows[-1].get('lm_score', '-')}",
                flush=True,
            )

    discrete = [(kind, sampler) for kind, samplers in TOKEN_SAMPLERS.items() if kind in pipes for sampler in samplers]
    for (kind, sampler), tau, reads, steps in itertools.product(discrete, args.word_temperature, args.reads, args.nfe):
        reading = {} if reads is None else {"rounding": "factorized"} if reads == 0 else {"reads": reads}
        texts, speed, nfe = generate_timed(pipes[kind], args.n, sampler, steps, temperature=tau, **reading)
        label = sampler + ("" if tau is None else f", τ {tau:g}") + ("" if reads is None else f", reads {reads}")
        rows.append(row(kind, label, nfe, texts, speed))
        print(f"{kind}, {label}, {steps} steps (NFE {nfe}): grammatical {rows[-1].get('grammatical', '-')}", flush=True)

    result = {
        "runs": {name: str(run) for name, run in runs.items() if run is not None}
        | {label: str(run) for label, (_, run) in zip(labels, args.extra)},
        "n": args.n,
        "temperatures": args.temperature,
        "sc_guidance": args.sc_guidance,
        "grids": args.grids,
        "threads": 1,
        "rows": rows,
        "skipped": skipped,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    table = markdown_table(rows, [c for c in COLUMNS if any(c in r for r in rows)])
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    figure = plot_quality_vs_nfe(rows, args.out / "quality_vs_nfe.png")
    if figure is not None:
        print(f"plot: {figure}")


if __name__ == "__main__":
    main()
