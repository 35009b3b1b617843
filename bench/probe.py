"""Where a diffusion LM fails: its denoising quality at each noise level, alone and iterated.

    .venv/bin/python bench/probe.py RUN [--t 0.02,0.1,0.2,0.3,0.5,0.7,1.0] [--n 64] [--steps 100] [--clamp]

For held-out sentences noised to time t (x_t ~ q(x_t | EMB(w)), the training distribution):

    ce            the denoiser's cross-entropy −log p̂(w | x_t) per word (PAD excluded)
    word_acc      share of words whose argmax prediction is right, from one call
    nearest_acc   the same for the nearest word embedding to x_t/√ᾱ (context ignored): what
                  context has to add is word_acc − nearest_acc
    recovered     share of sentences returned word for word after `--steps` DDPM steps from t
    grammatical   share of those outputs the exact parser accepts (bundled grammar corpus only)

t = 1 is plain sampling. `--clamp` snaps x̂0 to the embedding of its argmax word at every
step (the clamping trick). Prints JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

import difflm
from difflm.sampling.ddim import update
from difflm.text.dataset import prepare_data


@torch.no_grad()
def probe(pipe: difflm.Pipeline, ids: torch.Tensor, t: float, steps: int, clamp: bool, seed: int) -> dict:
    model, T = pipe.model, pipe.model.schedule.num_steps
    abar = model.schedule.alphas_cumprod.float()
    gen = torch.Generator().manual_seed(seed)
    start = min(max(round(t * T) - 1, 0), T - 1)  # the training index whose time (i+1)/T is t
    emb = model.embedding(ids)
    x = abar[start].sqrt() * emb + (1 - abar[start]).sqrt() * torch.randn(emb.shape, generator=gen)
    words = ids != 0
    first = model(x, torch.full((len(ids),), (start + 1) / T))
    row = {
        "t": (start + 1) / T,
        "alpha_bar": round(abar[start].item(), 4),
        "ce": F.cross_entropy(first.logits[words], ids[words]).item(),
        "word_acc": (first.logits.argmax(-1) == ids)[words].float().mean().item(),
        "nearest_acc": (model.embedding.nearest(x / abar[start].sqrt()) == ids)[words].float().mean().item(),
    }
    # DDPM ancestral steps (DDIM with η = 1) on an evenly spaced grid from the start index.
    grid = torch.linspace(start, 0, max(min(steps, start + 1), 1)).round().long().tolist()
    for i, s in zip(grid, grid[1:] + [-1]):
        pred = model(x, torch.full((len(ids),), (i + 1) / T))
        x0 = model.embedding(pred.logits.argmax(-1)) if clamp else pred.x0
        if s < 0:
            x = x0
            break
        mean, sigma = update(x0, x, abar[i].item(), abar[s].item(), eta=1.0)
        x = mean + sigma * torch.randn(x.shape, generator=gen)
    texts, truth = pipe.decode(model.embedding.nearest(x)), pipe.decode(ids)
    row["recovered"] = sum(a == b for a, b in zip(texts, truth)) / len(texts)
    if pipe.config.data.corpus == "grammar":
        from difflm.text.grammar import default_parser

        row["grammatical"] = sum(r.grammatical for r in default_parser().parse([s.split() for s in texts])) / len(texts)
    row["example"] = texts[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--t", default="0.02,0.1,0.2,0.3,0.5,0.7,1.0", help="comma-separated times in (0, 1]")
    parser.add_argument("--n", type=int, default=64, help="held-out sentences")
    parser.add_argument("--steps", type=int, default=100, help="DDPM steps from t = 1 (fewer from lower t)")
    parser.add_argument("--clamp", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = difflm.load(args.run)
    ids = prepare_data(pipe.config, vocab=pipe.vocab).valid[: args.n]
    rows = []
    for t in (float(v) for v in args.t.split(",")):
        if not 0 < t <= 1:
            raise SystemExit(f"--t values must lie in (0, 1], got {t}")
        rows.append(probe(pipe, ids, t, max(1, round(args.steps * t)), args.clamp, args.seed))
    print(json.dumps({"run": args.run, "clamp": args.clamp, "rows": rows}, indent=1))
    cols = [c for c in ("t", "alpha_bar", "ce", "word_acc", "nearest_acc", "recovered", "grammatical") if c in rows[0]]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
