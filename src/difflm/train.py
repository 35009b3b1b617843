"""Training a diffusion or AR run: its data, objective, run directory, resume and DDP (the
loop itself, with its schedule, clipping, NaN guard and EMA, is `difflm.loop`).

Exact resume without saving RNG states: every source of randomness is re-seeded from
(seed, step, rank) at each step (data order from (seed, epoch)), so step s draws the
same batch, noise and dropout whether or not the run was interrupted before it.
Under `torchrun`, each process takes its own slice of every global batch.
"""

from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from difflm import checkpoint
from difflm.config import Config
from difflm.loop import RunningMean, TrainingDiverged, TrainingLoop
from difflm.model.anchors import word_counts
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.objectives import Batch, Frozen, get_objective
from difflm.run import CONDITIONS_FILE, Network, build_model, load_conditions, load_teacher, resolve_device
from difflm.sampling.teacher import teacher_words
from difflm.text.corpora import Corpus
from difflm.text.dataset import prepare_data
from difflm.text.vocab import Vocab

#: Keys of `train` that may change when a run is resumed (extend it, or bound its time).
RESUMABLE_CHANGES = {"steps", "time_limit", "patience", "eval_every", "checkpoint_every", "log_every", "threads"}


def frozen_networks(config: Config, target: Denoiser | None, teacher: Denoiser | None) -> Frozen:
    """What the run's objective reads without training it: the EMA target, the teacher, and
    for sampler distillation the teacher's sampler S(x_T)."""
    words = None
    if teacher is not None and config.model.generator == "distilled":
        dc = config.distill
        words = partial(teacher_words, teacher, sampler=dc.sampler, steps=dc.teacher_steps, temperature=dc.temperature)
    return Frozen(target=target, teacher=teacher, teacher_words=words)


class Objective(torch.nn.Module):
    """A run's training loss (`difflm.objectives`) as a module, so that DDP can wrap the whole computation.

    forward(batch, generator) -> (loss, {term: float}).

    Args:
        model: the network being trained.
        config: the run config; it picks the loss (`objectives.get_objective`).
        frozen: the networks the loss reads but does not train.
    """

    def __init__(self, model: Network, config: Config, frozen: Frozen = Frozen()) -> None:
        super().__init__()
        self.model, self.config, self.frozen = model, config, frozen
        self.loss = get_objective(config)

    def forward(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.loss(self.model, batch, self.config, generator=generator, frozen=self.frozen)
        return out.loss, out.terms


def batch_indices(step: int, batch: int, n: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Indices of this process's rows for `step`: epochs are seeded permutations of the data."""
    start = step * batch * world + rank * batch
    positions = torch.arange(start, start + batch)
    epochs = positions // n
    out = torch.empty(batch, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        mask = epochs == epoch
        out[mask] = perm[positions[mask] % n]
    return out


def bucketed_pool(
    first: int, batch: int, lengths: torch.Tensor, seed: int, rank: int, world: int, pool: int
) -> torch.Tensor:
    """Length bucketing: the rows of the `pool` steps from `first` (`batch_indices`), sorted by
    length and cut into `pool` batches of similar lengths, in a seeded order: [pool, batch].
    Every row still comes once an epoch; a batch then pads to its own longest row, not to L."""
    rows = torch.cat([batch_indices(s, batch, len(lengths), seed, rank, world) for s in range(first, first + pool)])
    by_length = rows[torch.sort(lengths[rows], stable=True).indices].view(pool, batch)
    return by_length[torch.randperm(pool, generator=torch.Generator().manual_seed(seed * 100_003 + first * 64 + rank))]


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 64 + rank


#: Rows per held-out batch. Fixed, not train.batch_size: the fixed noise is drawn batch by
#: batch, so a different batch size would give every row other noise and the curves of runs
#: with different batch sizes (or DDP's per-process batches) would not compare.
HELDOUT_BATCH = 64


@torch.no_grad()
def heldout_loss(
    model: Network,
    ids: torch.Tensor,
    config: Config,
    device: torch.device,
    max_rows: int = 512,
    cond: torch.Tensor | None = None,
    *,
    teacher: Denoiser | None = None,
) -> dict[str, float]:
    """Mean loss terms on held-out rows (conditions cond [M, P], if any), with fixed noise: points on the curve compare.

    Targets that training reads from the EMA weights are read from the evaluated weights themselves.
    """
    was_training = model.training
    model.eval()
    objective = Objective(model, config, frozen_networks(config, None, teacher))
    generator = torch.Generator().manual_seed(12345)
    rows = ids[:max_rows]
    mean = RunningMean()
    for start in range(0, len(rows), HELDOUT_BATCH):
        end = start + HELDOUT_BATCH
        batch = Batch(rows[start:end].to(device), None if cond is None else cond[start:end].to(device))
        mean.add(objective(batch, generator)[1])
    model.train(was_training)
    return mean.result()


class Trainer(TrainingLoop):
    """A diffusion or AR run: its data, model (EMA copy), objective and run directory.

    Args:
        config: full run config.
        run_dir: where checkpoints and metrics go; an existing run there is resumed.
        corpus: an already read corpus (default: read `config.data.corpus`).
        progress: show a tqdm bar (rank 0 only).
    """

    ema: Network  # the EMA copy of the model (TrainingLoop types it as any Module)

    def __init__(
        self, config: Config, run_dir: str | Path, *, corpus: Corpus | None = None, progress: bool = True
    ) -> None:
        run_dir = Path(run_dir)
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        device = resolve_device(config.train.device)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"{run_dir} is a file, not a run directory; choose a new --out")
        self.resuming = (run_dir / "train_state.json").is_file()
        if self.resuming:
            _check_resume_config(run_dir, config)
        elif run_dir.exists() and any(p.name != checkpoint.RunLock.NAME for p in run_dir.iterdir()):
            raise ValueError(f"{run_dir} exists and is not a difflm run; choose a new --out")
        self.config = config
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.teacher: Denoiser | None
        self.teacher, teacher_vocab = load_teacher(config) if config.train.teacher else (None, None)
        vocab = Vocab.load(run_dir / "vocab.json") if self.resuming else teacher_vocab
        conditions = load_conditions(config, run_dir) if self.resuming else None
        self.data = prepare_data(config, corpus, vocab, conditions)
        torch.manual_seed(config.train.seed)
        num_conditions = len(self.data.conditions) if self.data.conditions else 0
        model = build_model(config, len(self.data.vocab), num_conditions).to(device)
        if self.teacher is not None:  # distillation starts from the teacher (resuming overwrites it)
            self.teacher.to(device)
            # From its denoiser: a contextual rounding decoder the teacher carries is not the student's.
            own = model.state_dict().keys()
            model.load_state_dict({key: value for key, value in self.teacher.state_dict().items() if key in own})
        if isinstance(model, (Denoiser, TokenDenoiser)) and model.lengths is not None:  # sampling's length prior
            model.lengths.copy_(word_counts(self.data.train, config.data.max_len))
        super().__init__(model, config.train, run_dir, progress=progress, world=world, rank=rank)
        self.row_lengths = (self.data.train != Vocab.PAD_ID).sum(1)  # START … END
        self.pool: tuple[int, torch.Tensor] | None = None  # (first step, its batches) under length bucketing
        if self.resuming:
            self._load_state()
        # The EMA is the target only of a denoiser's objective: the autoregressive loss reads nothing frozen.
        target = self.ema if isinstance(self.ema, Denoiser) else None
        self.objective: torch.nn.Module = Objective(model, config, frozen_networks(config, target, self.teacher))
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.objective = torch.nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)

    def batch_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        tc = self.config.train
        seed = step_seed(tc.seed, self.step, self.rank)
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed)  # t, ε, self-conditioning coins
        if tc.length_pool:
            first = self.step - self.step % tc.length_pool
            if self.pool is None or self.pool[0] != first:  # drawn and sorted once per pool, not per step
                args = (tc.batch_size, self.row_lengths, tc.seed, self.rank, self.world, tc.length_pool)
                self.pool = (first, bucketed_pool(first, *args))
            rows = self.pool[1][self.step - first]
            # cut after the longest row: its PAD columns would cost compute and teach nothing
            ids = self.data.train[rows][:, : int(self.row_lengths[rows].max())]
        else:
            rows = batch_indices(self.step, tc.batch_size, len(self.data.train), tc.seed, self.rank, self.world)
            ids = self.data.train[rows]
        self.batch_tokens = ids.numel() * self.world
        batch = Batch(
            ids.to(self.device), None if self.data.train_cond is None else self.data.train_cond[rows].to(self.device)
        )
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.bf16):
            return self.objective(batch, generator)

    def evaluate(self) -> dict[str, float]:
        return heldout_loss(
            self.ema, self.data.valid, self.config, self.device, cond=self.data.valid_cond, teacher=self.teacher
        )

    def start_writing(self) -> None:
        """Write a new run's files, or trim a resumed run's log (the lock is held).

        Nothing is written before the lock is held, so a second trainer on the same
        directory stops, naming the first, without touching its files.
        """
        if self.resuming:
            self._truncate_metrics()
            return
        self.config.save(self.out_dir / "config.json")
        self.data.vocab.save(self.out_dir / "vocab.json")
        if self.data.conditions is not None:
            self.data.conditions.save(self.out_dir / CONDITIONS_FILE)

    def last_checkpoint(self) -> str:
        state = self.out_dir / "train_state.json"
        return (
            f"the run keeps its checkpoint of step {checkpoint.read_json(state)['step']}"
            if state.is_file()
            else "nothing was saved"
        )

    def _load_state(self) -> None:
        state = checkpoint.read_json(self.out_dir / "train_state.json")
        checkpoint.load_weights(self.model, self.out_dir / "model.safetensors")
        checkpoint.load_weights(self.ema, self.out_dir / "ema.safetensors")
        checkpoint.optimizer_from_tensors(
            self.optimizer, checkpoint.load_tensors(self.out_dir / "optimizer.safetensors"), state["optimizer"]
        )
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingDiverged(
                    f"cannot resume {self.out_dir}: its saved weights are not finite ({name}); "
                    f"start a new run with a lower train.lr"
                )
        self.step, self.elapsed, self.cpu_seconds = state["step"], state["elapsed"], state.get("cpu_seconds", 0.0)
        best = state.get("best")
        self.best = (math.inf, 0) if best is None else (best["loss"], best["step"])
        self.stopped = state.get("stopped", False)

    def _truncate_metrics(self) -> None:
        """Drop metric rows logged after the checkpoint: the resumed run logs them again."""
        path = self.out_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and _row_step(line) <= self.step
        ]
        checkpoint.atomic_write_text(path, "".join(line + "\n" for line in kept))

    def save(self) -> None:
        """Write weights, EMA, optimizer and the step counter (rank 0)."""
        if self.rank != 0:
            return
        checkpoint.save_weights(self.out_dir / "model.safetensors", self.model)
        checkpoint.save_weights(self.out_dir / "ema.safetensors", self.ema)
        tensors, plain = checkpoint.optimizer_to_tensors(self.optimizer)
        checkpoint.save_tensors(self.out_dir / "optimizer.safetensors", tensors)
        state = {
            "step": self.step,
            "elapsed": self.elapsed,
            "cpu_seconds": self.cpu_seconds,
            "optimizer": plain,
            "data": self.data.report,
        }
        if self.tc.patience:
            state["best"] = {"loss": self.best[0], "step": self.best[1]}
        # train_state.json last: it is what marks the checkpoint as complete.
        checkpoint.atomic_write_text(self.out_dir / "train_state.json", json.dumps(state))

    def mark_stopped(self) -> None:
        if self.rank != 0:
            return
        path = self.out_dir / "train_state.json"
        state = checkpoint.read_json(path)
        checkpoint.atomic_write_text(path, json.dumps({**state, "stopped": True}))


def _check_resume_config(run_dir: Path, requested: Config) -> None:
    """Refuse a requested config that differs from the saved run's in more than `RESUMABLE_CHANGES`."""
    saved = Config.load_run(run_dir)
    req, old = requested.to_dict(), saved.to_dict()
    changed = [
        f"{section}.{key}"
        for section in old
        for key in old[section]
        if old[section][key] != req[section][key] and not (section == "train" and key in RESUMABLE_CHANGES)
    ]
    if changed:
        raise ValueError(f"cannot resume {run_dir}: config differs in {', '.join(changed)}")


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # an unreadable (half-written) row is dropped


def train(config: Config, run_dir: str | Path, *, corpus: Corpus | None = None, progress: bool = True) -> dict:
    """Train (or resume) a run; see `Trainer`."""
    return Trainer(config, run_dir, corpus=corpus, progress=progress).run()
