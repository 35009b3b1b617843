"""Load a trained run and sample from it: `difflm.load(RUN).sample(...)`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from difflm import checkpoint
from difflm.config import Config
from difflm.model.autoregressive import CausalLM
from difflm.model.denoiser import Denoiser
from difflm.sampling import get_sampler
from difflm.sampling.autoguidance import SC_GUIDANCE, SelfConditioningGuidance, check_scale
from difflm.sampling.base import SampleOutput
from difflm.sampling.rounding import SAMPLING_TEMPERATURE
from difflm.text.vocab import Vocab
from difflm.text.slots import SlotLabels
from difflm.train import build_model, load_conditions, resolve_device


class Pipeline:
    """A trained run ready to sample: a diffusion LM, or the autoregressive LM.

    Attributes:
        config: the run's config.
        vocab: its vocabulary.
        model: the (EMA) denoiser or causal LM, in eval mode.
        conditions: the slot=value labels of a run trained with model.condition=slots
            (classifier-free guidance, `difflm.control`), else None.
    """

    def __init__(
        self, config: Config, vocab: Vocab, model: Denoiser | CausalLM, conditions: SlotLabels | None = None
    ) -> None:
        self.config = config
        self.vocab = vocab
        self.model = model.eval()
        self.conditions = conditions

    @classmethod
    def from_run(cls, run_dir: str | Path, *, weights: str = "ema", device: str = "auto") -> "Pipeline":
        """Load `config.json`, `vocab.json` and `{weights}.safetensors` from a run directory."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ValueError(f"run directory not found: {run_dir}")
        if weights not in ("ema", "model"):
            raise ValueError(f"weights must be 'ema' or 'model', got '{weights}'")
        config = Config.load_run(run_dir)
        vocab = Vocab.load(run_dir / "vocab.json")
        conditions = load_conditions(config, run_dir)
        model = build_model(config, len(vocab), len(conditions) if conditions else 0)
        checkpoint.load_weights(model, run_dir / f"{weights}.safetensors")
        return cls(config, vocab, model.to(resolve_device(device)), conditions)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_autoregressive(self) -> bool:
        return isinstance(self.model, CausalLM)

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        return generator

    def generate(
        self,
        n: int,
        *,
        sampler: str = "ddpm",
        steps: int = 50,
        seed: int | None = 0,
        length: int | None = None,
        temperature: float = SAMPLING_TEMPERATURE,
        sc_guidance: float | None = None,
        **options,
    ) -> SampleOutput:
        """Run a diffusion sampler for n sentences of `length` positions (default: the model's L).

        `temperature` sharpens x̂0 (`difflm.sampling.rounding`); 1 follows the model exactly.
        `sc_guidance` w ≠ 1 guides a self-conditioned run away from its own prediction
        without the self-conditioning input (`difflm.sampling.autoguidance`); the output's
        nfe then counts both halves of every guided call. None: `SC_GUIDANCE` on a
        self-conditioned run (better than unguided sampling with as many evaluations), else 1.
        """
        if self.is_autoregressive:
            raise ValueError("this run is an autoregressive LM: use sample(), not a diffusion sampler")
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        shape = (n, length or self.config.data.max_len, self.config.model.embed_dim)
        if sc_guidance is None:
            sc_guidance = SC_GUIDANCE if self.model.self_conditioning else 1.0
        denoiser = self.model if check_scale(sc_guidance) == 1.0 else SelfConditioningGuidance(self.model, sc_guidance)
        output = get_sampler(sampler)(
            denoiser, shape, steps=steps, generator=self._generator(seed), temperature=temperature, **options
        )
        return output if denoiser is self.model else replace(output, nfe=denoiser.evaluations)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Word ids [B, L] -> sentences, cut at the first END or PAD."""
        return [" ".join(self.vocab.decode(row.tolist())) for row in tokens]

    def sample(self, n: int = 8, *, seed: int | None = 0, **options) -> list[str]:
        """Sample n sentences.

        Diffusion runs take the options of `generate` (sampler, steps, eta, clamp_from, …);
        autoregressive runs take temperature and top_p.
        """
        if not self.is_autoregressive:
            return self.decode(self.generate(n, seed=seed, **options).tokens)
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        unknown = set(options) - {"temperature", "top_p"}
        if unknown:
            raise ValueError(f"unknown option(s) for an autoregressive run: {sorted(unknown)}")
        return self.decode(self.model.generate(n, generator=self._generator(seed), **options))


def load(run_dir: str | Path, **kwargs) -> Pipeline:
    """Load a trained run directory; see `Pipeline.from_run`."""
    return Pipeline.from_run(run_dir, **kwargs)
