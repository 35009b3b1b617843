"""Load a trained run and sample from it: `difflm.load(RUN).sample(...)`."""
from __future__ import annotations

from pathlib import Path

import torch

from difflm import checkpoint
from difflm.config import Config
from difflm.model.denoiser import Denoiser
from difflm.sampling import get_sampler
from difflm.sampling.base import SampleOutput
from difflm.text.vocab import Vocab
from difflm.train import build_denoiser, resolve_device


class Pipeline:
    """A trained diffusion LM ready to sample.

    Attributes:
        config: the run's config.
        vocab: its vocabulary.
        denoiser: the (EMA) denoiser, in eval mode.
    """

    def __init__(self, config: Config, vocab: Vocab, denoiser: Denoiser) -> None:
        self.config = config
        self.vocab = vocab
        self.denoiser = denoiser.eval()

    @classmethod
    def from_run(cls, run_dir: str | Path, *, weights: str = "ema", device: str = "auto") -> "Pipeline":
        """Load `config.json`, `vocab.json` and `{weights}.safetensors` from a run directory."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ValueError(f"run directory not found: {run_dir}")
        if weights not in ("ema", "model"):
            raise ValueError(f"weights must be 'ema' or 'model', got '{weights}'")
        config = Config.from_dict(checkpoint.read_json(run_dir / "config.json"))
        vocab = Vocab.load(run_dir / "vocab.json")
        denoiser = build_denoiser(config, len(vocab))
        checkpoint.load_weights(denoiser, run_dir / f"{weights}.safetensors")
        return cls(config, vocab, denoiser.to(resolve_device(device)))

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def generate(
        self,
        n: int,
        *,
        sampler: str = "ddim",
        steps: int = 50,
        seed: int | None = 0,
        length: int | None = None,
        **options,
    ) -> SampleOutput:
        """Run a sampler for n sentences of `length` positions (default: the model's L)."""
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        length = length or self.config.data.max_len
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        shape = (n, length, self.config.model.embed_dim)
        return get_sampler(sampler)(self.denoiser, shape, steps=steps, generator=generator, **options)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Word ids [B, L] -> sentences, cut at the first END or PAD."""
        return [" ".join(self.vocab.decode(row.tolist())) for row in tokens]

    def sample(self, n: int = 8, **kwargs) -> list[str]:
        """Sample n sentences; keyword arguments as in `generate`."""
        return self.decode(self.generate(n, **kwargs).tokens)


def load(run_dir: str | Path, **kwargs) -> Pipeline:
    """Load a trained run directory; see `Pipeline.from_run`."""
    return Pipeline.from_run(run_dir, **kwargs)
