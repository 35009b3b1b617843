"""A run directory's networks: build the model a config describes, and load a saved run.

The file formats are `checkpoint`'s; this module knows which files a run holds and which
network each config builds. Inference (`pipeline`), training (`train`) and classifier
training all load runs through it, so none of them imports another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from difflm import checkpoint
from difflm.config import TOKEN_KINDS, Config
from difflm.diffusion.schedules import make_schedule
from difflm.model.autoregressive import CausalLM
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.text.slots import SlotLabels
from difflm.text.vocab import Vocab

#: The file of a conditioned run's slot=value labels (`SlotLabels`).
CONDITIONS_FILE = "conditions.json"


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; under torchrun each process takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def load_conditions(config: Config, run_dir: str | Path) -> SlotLabels | None:
    """A slot-conditioned run's label set (RUN/conditions.json), None for any other run."""
    return SlotLabels.load(Path(run_dir) / CONDITIONS_FILE) if config.model.condition == "slots" else None


#: The network of a run: the continuous denoiser, the causal LM or the token denoiser.
Network = Denoiser | CausalLM | TokenDenoiser


def build_model(config: Config, vocab_size: int, num_conditions: int = 0) -> Network:
    """The network a config describes: the diffusion denoiser, the token denoiser or the causal
    LM, conditioned on P = num_conditions slot=value pairs (model.condition=slots) or on a
    source of data.source_len ids (model.condition=source)."""
    if config.model.condition == "source":
        num_conditions = config.data.source_len
    if config.model.kind == "autoregressive":
        return CausalLM(config.model, vocab_size, config.data.max_len, num_conditions)
    rounding = config.rounding if config.contextual_rounding else None
    if config.model.kind in TOKEN_KINDS:
        return TokenDenoiser(
            config.model,
            vocab_size,
            config.data.max_len,
            config.diffusion.length_anchors,
            num_conditions,
            noise=config.model.kind,
            rounding=rounding,
        )
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.steps)
    return Denoiser(
        config.model,
        vocab_size,
        config.data.max_len,
        schedule,
        num_conditions,
        rounding,
        length_anchors=config.diffusion.length_anchors,
        sweep_lag=config.diffusion.sweep_lag if config.diffusion.sweep else 0.0,
    )


@dataclass
class SavedRun:
    """A trained run as loaded from its directory.

    Attributes:
        config: the run's config.
        vocab: its vocabulary.
        model: the network with the chosen weights, in eval mode, on the chosen device.
        conditions: the slot=value labels of a conditioned run, else None.
    """

    config: Config
    vocab: Vocab
    model: Network
    conditions: SlotLabels | None


def load_run(run_dir: str | Path, *, weights: str = "ema", device: str = "auto") -> SavedRun:
    """Load `config.json`, `vocab.json`, the labels and `{weights}.safetensors` from a run directory.

    A saved model (`hub.save_pretrained`) keeps only the weights it samples with, as
    model.safetensors: there, weights="ema" reads that file.

    Raises:
        ValueError: no run directory there, unknown weights, or unreadable files.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run directory not found: {run_dir}")
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got '{weights}'")
    config = Config.load_run(run_dir)
    vocab = Vocab.load(run_dir / "vocab.json")
    conditions = load_conditions(config, run_dir)
    model = build_model(config, len(vocab), len(conditions) if conditions else 0)
    path = run_dir / f"{weights}.safetensors"
    if weights == "ema" and not path.exists() and (run_dir / "model.safetensors").exists():
        path = run_dir / "model.safetensors"
    checkpoint.load_weights(model, path)
    return SavedRun(config, vocab, model.to(resolve_device(device)).eval(), conditions)


def load_teacher(config: Config) -> tuple[Denoiser, Vocab]:
    """The frozen diffusion model of `train.teacher` (EMA weights) and its vocabulary.

    Raises:
        ValueError: the run is missing, or it is not a diffusion model with the student's
            model (but for its generator), diffusion and length settings.
    """
    run = Path(config.train.teacher)
    if not (run / "config.json").is_file():
        raise ValueError(f"train.teacher: no difflm run at {run}")
    saved = Config.load_run(run)
    if saved.model.kind != "diffusion" or saved.model.generator != "diffusion":
        raise ValueError(
            f"train.teacher: {run} is not a diffusion model (model.kind={saved.model.kind}, "
            f"model.generator={saved.model.generator})"
        )
    mine, theirs = config.to_dict(), saved.to_dict()
    mine["model"]["generator"] = "diffusion"
    differ = [
        f"{section}.{key} (teacher {theirs[section][key]!r}, here {mine[section][key]!r})"
        for section in ("model", "diffusion")
        for key in theirs[section]
        if mine[section][key] != theirs[section][key]
    ]
    differ += [] if mine["data"]["max_len"] == theirs["data"]["max_len"] else ["data.max_len"]
    if differ:
        raise ValueError(
            f"train.teacher: the student starts from the teacher's weights, but {', '.join(differ)} "
            f"differ; start from its config with --config {run / 'config.json'}"
        )
    teacher = load_run(run, device="cpu")  # the trainer moves it to its own device
    assert isinstance(teacher.model, Denoiser)
    return teacher.model.requires_grad_(False), teacher.vocab
