"""`difflm plot RUN`: the figures of a run, written as PNGs (`eval/plots.py` draws them).

    training_curves.png   each loss term and the held-out loss against the step
    embeddings.png        the word vectors in 2-D (principal components), coloured by part of
                          speech (the bundled grammar's gold tags) or by slot (E2E MR values)
    trajectory.png        one sentence denoised: steps × positions, each cell the word x̂0
                          rounds to there, coloured by its probability (continuous runs)
    quality_vs_nfe.png    quality against network evaluations, from a `bench/fast.py` result

A figure a run cannot have (no metrics.jsonl in a saved model, no trajectory of a discrete
or autoregressive run, no bench result given) is left out with the reason.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from difflm import hub
from difflm.eval.plots import plot_embeddings, plot_quality_vs_nfe, plot_training_curves, plot_trajectory
from difflm.model.autoregressive import CausalLM
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.pipeline import Pipeline
from difflm.sampling.base import StepInfo
from difflm.text.corpora import read_corpus
from difflm.text.vocab import Vocab


def word_vectors(pipe: Pipeline) -> torch.Tensor:
    """The run's input word vectors [V, ·]: the diffusion embedding, or the token embedding."""
    model = pipe.model
    if isinstance(model, Denoiser):
        return model.embedding.table()
    if isinstance(model, TokenDenoiser):
        return model.embed.weight[: len(pipe.vocab)]
    assert isinstance(model, CausalLM)
    return model.tok.weight


def word_classes(pipe: Pipeline) -> dict[str, str]:
    """Each word's class: its most frequent gold POS tag on the bundled grammar, the slot whose
    values contain it on E2E; empty for other corpora."""
    corpus = pipe.config.data.corpus
    counts: dict[str, Counter] = {}
    if corpus == "grammar":
        from difflm.text.grammar import load_split

        for sentence in load_split("train"):
            for word, tag in zip(sentence.tokens, sentence.pos):
                counts.setdefault(word, Counter())[tag] += 1
    elif corpus.startswith("e2e:"):
        for example in read_corpus(corpus).examples:
            for slot, value in example.slots.items():
                for word in value.split():
                    counts.setdefault(word, Counter())[slot] += 1
    return {word: c.most_common(1)[0][0] for word, c in counts.items()}


def trajectory(pipe: Pipeline, steps: int, seed: int) -> tuple[list[list[str]], torch.Tensor, list[float]]:
    """One sentence sampled with `steps` DDPM steps: the words x̂0 rounds to after each step
    [K × L], their probabilities [K, L] and the steps' times."""
    model = pipe.model
    assert isinstance(model, Denoiser)
    words, confidence, times = [], [], []

    def record(info: StepInfo) -> None:
        with torch.no_grad():
            probs = model.embedding.logits(info.x0[0]).softmax(-1)
        best = probs.max(-1)
        words.append([pipe.vocab.token_of(int(i)) for i in best.indices])
        confidence.append(best.values)
        times.append(info.t)

    pipe.generate(1, sampler="ddpm", steps=steps, seed=seed, callback=record)
    final = words[-1]  # the PAD tail after the sentence says nothing: cut after its first PAD or END
    width = next((i + 1 for i, w in enumerate(final) if i and w in (Vocab.END, Vocab.PAD)), len(final))
    return [row[:width] for row in words], torch.stack(confidence)[:, :width], times


def make_figures(run: str | Path, out: str | Path, *, bench: str | Path | None = None, steps: int = 20) -> dict:
    """Write the run's figures into `out`: {"written": [paths], "skipped": {figure: reason}}."""
    out = Path(out)
    pipe = Pipeline.from_run(run)
    directory = hub.resolve(run)
    written, skipped = [], {}
    if (directory / "metrics.jsonl").is_file():
        written.append(plot_training_curves(directory, out / "training_curves.png"))
    else:
        skipped["training_curves.png"] = "no metrics.jsonl (a saved model keeps no training log)"
    words = [w for w in pipe.vocab.tokens if w not in Vocab.SPECIALS]
    ids = torch.tensor([pipe.vocab.id_of(w) for w in words])
    vectors = word_vectors(pipe).detach().cpu()[ids]
    written.append(plot_embeddings(vectors, words, word_classes(pipe), out / "embeddings.png"))
    if isinstance(pipe.model, Denoiser):
        written.append(plot_trajectory(*trajectory(pipe, steps, seed=0), out / "trajectory.png"))
    else:
        skipped["trajectory.png"] = f"a {pipe.config.model.kind} run has no x̂0 to follow step by step"
    if bench is None:
        skipped["quality_vs_nfe.png"] = "no bench result given (--bench bench/out/fast/result.json)"
    else:
        try:
            rows = json.loads(Path(bench).read_text())["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"{bench} is not a bench/fast.py result.json (rows of nfe and quality)") from None
        figure = plot_quality_vs_nfe(rows, out / "quality_vs_nfe.png")
        if figure is None:
            skipped["quality_vs_nfe.png"] = f"{bench} has no grammatical or lm_score rows"
        else:
            written.append(figure)
    return {"written": [str(p) for p in written], "skipped": skipped}
