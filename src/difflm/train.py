"""Training loop: AdamW with warmup and linear decay, clipping, EMA, checkpoints, DDP.

Exact resume without saving RNG states: every source of randomness is re-seeded from
(seed, step, rank) at each step (data order from (seed, epoch)), so step s draws the
same batch, noise and dropout whether or not the run was interrupted before it.
Under `torchrun`, each process takes its own slice of every global batch.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from functools import partial
from typing import Callable

import torch
import torch.distributed as dist
from tqdm import tqdm

from difflm import checkpoint
from difflm.config import Config
from difflm.model.autoregressive import CausalLM
from difflm.model.denoiser import Denoiser
from difflm.objectives import Batch, Frozen, get_objective
from difflm.run import CONDITIONS_FILE, build_model, load_conditions, load_teacher, resolve_device
from difflm.sampling.teacher import teacher_words
from difflm.text.corpora import Corpus
from difflm.text.dataset import prepare_data
from difflm.text.vocab import Vocab

#: Keys of `train` that may change when a run is resumed (extend it, or bound its time).
RESUMABLE_CHANGES = {"steps", "time_limit", "eval_every", "checkpoint_every", "log_every", "threads"}


class TrainingDiverged(ValueError):
    """The loss or the gradient became non-finite: training stops, the last finite checkpoint stays."""


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

    def __init__(self, model: Denoiser | CausalLM, config: Config, frozen: Frozen = Frozen()) -> None:
        super().__init__()
        self.model, self.config, self.frozen = model, config, frozen
        self.loss = get_objective(config)

    def forward(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.loss(self.model, batch, self.config, generator=generator, frozen=self.frozen)
        return out.loss, out.terms


def lr_at(step: int, config: Config) -> float:
    """Linear warmup to the peak, then linear decay to 0 at the last step."""
    tc = config.train
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    return tc.lr * max(0.0, (tc.steps - step) / max(1, tc.steps - tc.warmup))


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


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 64 + rank


#: Rows per held-out batch. Fixed, not train.batch_size: the fixed noise is drawn batch by
#: batch, so a different batch size would give every row other noise and the curves of runs
#: with different batch sizes (or DDP's per-process batches) would not compare.
HELDOUT_BATCH = 64


@torch.no_grad()
def heldout_loss(model: Denoiser | CausalLM, ids: torch.Tensor, config: Config, device: torch.device, max_rows: int = 512,
                 cond: torch.Tensor | None = None, *, teacher: Denoiser | None = None) -> dict[str, float]:
    """Mean loss terms on held-out rows (conditions cond [M, P], if any), with fixed noise so points on the curve compare.

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


class RunningMean:
    """Per-key means of logged terms; a key counts only the batches that reported it."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, terms: dict[str, float]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def result(self) -> dict[str, float]:
        return {k: v / self.counts[k] for k, v in self.sums.items()}


class Trainer:
    """Owns the model (denoiser or causal LM), its EMA copy, the optimizer and the run directory.

    Args:
        config: full run config.
        run_dir: where checkpoints and metrics go; an existing run there is resumed.
        corpus: an already read corpus (default: read `config.data.corpus`).
        progress: show a tqdm bar (rank 0 only).
    """

    def __init__(self, config: Config, run_dir: str | Path, *, corpus: Corpus | None = None, progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(config.train.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.step = 0
        self.elapsed = 0.0  # wall-clock seconds of training, across resumes
        self.cpu_seconds = 0.0  # CPU time of this process (all its threads), across resumes
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"{self.run_dir} is a file, not a run directory; choose a new --out")
        resuming = self._has_checkpoint()
        if resuming:
            config = self._check_resume_config(config)
        elif self.run_dir.exists() and any(p.name != checkpoint.RunLock.NAME for p in self.run_dir.iterdir()):
            raise ValueError(f"{self.run_dir} exists and is not a difflm run; choose a new --out")
        self.resuming = resuming
        self.lock: checkpoint.RunLock | None = None
        self.config = config
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.teacher, teacher_vocab = load_teacher(config) if config.train.teacher else (None, None)
        vocab = Vocab.load(self.run_dir / "vocab.json") if resuming else teacher_vocab
        conditions = load_conditions(config, self.run_dir) if resuming else None
        self.data = prepare_data(config, corpus, vocab, conditions)
        torch.manual_seed(config.train.seed)
        num_conditions = len(self.data.conditions) if self.data.conditions else 0
        self.model = build_model(config, len(self.data.vocab), num_conditions).to(self.device)
        if self.teacher is not None:  # distillation starts from the teacher (resuming overwrites it)
            self.teacher.to(self.device)
            self.model.load_state_dict(self.teacher.state_dict())
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        if resuming:
            self._load_state()
        self.objective: torch.nn.Module = Objective(self.model, config, frozen_networks(config, self.ema, self.teacher))
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = torch.nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)
        self.progress = progress and self.rank == 0

    def _start_writing(self) -> None:
        """Lock the run directory (rank 0), then write a new run's files or trim a resumed run's log.

        Nothing is written before the lock is held, so a second trainer on the same
        directory stops, naming the first, without touching its files.
        """
        if self.rank != 0:
            return
        self.lock = checkpoint.RunLock(self.run_dir)
        if self.resuming:
            self._truncate_metrics()
            return
        self.config.save(self.run_dir / "config.json")
        self.data.vocab.save(self.run_dir / "vocab.json")
        if self.data.conditions is not None:
            self.data.conditions.save(self.run_dir / CONDITIONS_FILE)

    # -- resume -------------------------------------------------------------------------
    def _check_resume_config(self, requested: Config) -> Config:
        saved = Config.load_run(self.run_dir)
        req, old = requested.to_dict(), saved.to_dict()
        changed = [
            f"{section}.{key}"
            for section in old
            for key in old[section]
            if old[section][key] != req[section][key] and not (section == "train" and key in RESUMABLE_CHANGES)
        ]
        if changed:
            raise ValueError(f"cannot resume {self.run_dir}: config differs in {', '.join(changed)}")
        return requested

    def _load_state(self) -> None:
        state = checkpoint.read_json(self.run_dir / "train_state.json")
        checkpoint.load_weights(self.model, self.run_dir / "model.safetensors")
        checkpoint.load_weights(self.ema, self.run_dir / "ema.safetensors")
        checkpoint.optimizer_from_tensors(
            self.optimizer, checkpoint.load_tensors(self.run_dir / "optimizer.safetensors"), state["optimizer"]
        )
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingDiverged(f"cannot resume {self.run_dir}: its saved weights are not finite ({name}); "
                                       f"start a new run with a lower train.lr")
        self.step, self.elapsed, self.cpu_seconds = state["step"], state["elapsed"], state.get("cpu_seconds", 0.0)

    def _truncate_metrics(self) -> None:
        """Drop metric rows logged after the checkpoint: the resumed run logs them again."""
        path = self.run_dir / "metrics.jsonl"
        if self.rank != 0 or not path.is_file():
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and _row_step(line) <= self.step]
        checkpoint.atomic_write_text(path, "".join(line + "\n" for line in kept))

    def save(self) -> None:
        """Write weights, EMA, optimizer and the step counter (rank 0)."""
        if self.rank != 0:
            return
        checkpoint.save_weights(self.run_dir / "model.safetensors", self.model)
        checkpoint.save_weights(self.run_dir / "ema.safetensors", self.ema)
        tensors, plain = checkpoint.optimizer_to_tensors(self.optimizer)
        checkpoint.save_tensors(self.run_dir / "optimizer.safetensors", tensors)
        state = {"step": self.step, "elapsed": self.elapsed, "cpu_seconds": self.cpu_seconds, "optimizer": plain, "data": self.data.report}
        # train_state.json last: it is what marks the checkpoint as complete.
        checkpoint.atomic_write_text(self.run_dir / "train_state.json", json.dumps(state))

    def log(self, row: dict) -> None:
        if self.rank == 0:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    # -- the loop -----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        tc = self.config.train
        seed = step_seed(tc.seed, self.step, self.rank)
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed)  # t, ε, self-conditioning coins
        rows = batch_indices(self.step, tc.batch_size, len(self.data.train), tc.seed, self.rank, self.world)
        batch = Batch(self.data.train[rows].to(self.device),
                      None if self.data.train_cond is None else self.data.train_cond[rows].to(self.device))
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.config)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.bf16):
            loss, terms = self.objective(batch, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
        self._stop_if_diverged(loss, grad_norm)
        self.optimizer.step()
        # EMA with a warm-up of its decay, so short runs are not dominated by the init.
        decay = min(tc.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for ema_p, p in zip(self.ema.parameters(), self.model.parameters()):
                ema_p.lerp_(p, 1 - decay)
        self.step += 1
        return {**terms, "grad_norm": float(grad_norm)}

    def _stop_if_diverged(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Raise `TrainingDiverged` before a non-finite loss or gradient reaches the weights.

        Nothing is saved: the run directory keeps its last checkpoint, all of whose weights
        were finite. Under DDP every process stops at the same step.
        """
        bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(grad_norm)).float().reshape(())
        if self.world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            saved = checkpoint.read_json(self.run_dir / "train_state.json")["step"] if self._has_checkpoint() else None
            kept = f"the run keeps its checkpoint of step {saved}" if saved is not None else "nothing was saved"
            raise TrainingDiverged(f"training diverged at step {self.step + 1} (loss {loss.item():.4g}, gradient norm "
                                   f"{float(grad_norm):.4g}); {kept}; lower train.lr (now {self.config.train.lr:g})")

    def _has_checkpoint(self) -> bool:
        return (self.run_dir / "train_state.json").is_file()

    def run(self, on_log: Callable[[dict], None] | None = None) -> dict:
        """Train until `train.steps` (or the time limit); returns the last logged rows.

        Holds the run directory's lock meanwhile (`checkpoint.RunLock`).
        """
        self._start_writing()
        try:
            return self._loop(on_log)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def _loop(self, on_log: Callable[[dict], None] | None) -> dict:
        tc = self.config.train
        tokens_per_step = tc.batch_size * self.config.data.max_len * self.world
        bar = tqdm(total=tc.steps, initial=self.step, disable=not self.progress, desc="train", dynamic_ncols=True)
        window = RunningMean()
        window_steps, window_start = 0, time.perf_counter()
        last: dict[str, dict] = {}
        session_start, cpu_start = time.perf_counter(), time.process_time()
        elapsed_at_start, cpu_at_start = self.elapsed, self.cpu_seconds
        while self.step < tc.steps:
            window.add(self.train_step())
            self.elapsed = elapsed_at_start + time.perf_counter() - session_start
            self.cpu_seconds = cpu_at_start + time.process_time() - cpu_start
            window_steps += 1
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                seconds = time.perf_counter() - window_start
                row = {"step": self.step, "split": "train", **window.result()}
                row.update(lr=lr_at(self.step - 1, self.config), tokens_per_s=tokens_per_step * window_steps / seconds,
                           steps_per_s=window_steps / seconds, elapsed=self.elapsed, cpu_seconds=self.cpu_seconds)
                self.log(row)
                last["train"] = row
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
                window, window_steps, window_start = RunningMean(), 0, time.perf_counter()
                if on_log:
                    on_log(row)
            if self.step % tc.eval_every == 0 or self.step == tc.steps:
                held = heldout_loss(self.ema, self.data.valid, self.config, self.device, cond=self.data.valid_cond,
                                    teacher=self.teacher)
                row = {"step": self.step, "split": "valid", **held, "elapsed": self.elapsed, "cpu_seconds": self.cpu_seconds}
                self.log(row)
                last["valid"] = row
                if on_log:
                    on_log(row)
            out_of_time = self._out_of_time()
            if self.step % tc.checkpoint_every == 0 or self.step == tc.steps or out_of_time:
                self.save()
            if out_of_time:
                break
        bar.close()
        return last

    def _out_of_time(self) -> bool:
        limit = self.config.train.time_limit
        if limit <= 0:
            return False
        flag = torch.tensor(float(self.elapsed >= limit * 60), device=self.device)
        if self.world > 1:  # all processes must stop at the same step
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # an unreadable (half-written) row is dropped


def train(config: Config, run_dir: str | Path, *, corpus: Corpus | None = None, progress: bool = True) -> dict:
    """Train (or resume) a run; see `Trainer`."""
    return Trainer(config, run_dir, corpus=corpus, progress=progress).run()
