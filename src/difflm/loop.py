"""The one training loop: AdamW with warmup and linear decay, clipping, a NaN guard, EMA,
logging windows, held-out evaluation, checkpoints, a time limit, early stopping and the run lock.

A `TrainingLoop` subclass says what is trained and how it is judged and saved:
`batch_loss()` (the loss of the current step), `evaluate()` (held-out figures) and
`save()` (a checkpoint). The diffusion and AR runs (`train.Trainer`) and the latent
classifiers (`train_classifier.ClassifierTrainer`) share everything else.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from difflm import checkpoint
from difflm.config import TrainConfig


class TrainingDiverged(ValueError):
    """The loss or the gradient became non-finite: training stops, the last finite checkpoint stays."""


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to the peak, then linear decay to 0 at the last step."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    return tc.lr * max(0.0, (tc.steps - step) / max(1, tc.steps - tc.warmup))


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


class TrainingLoop:
    """Optimises `model` under the settings `tc`, logging to `out_dir/metrics.jsonl`.

    Args:
        model: the module being trained (already on its device).
        tc: steps, batch size, learning rate and schedule, clipping, EMA decay, the
            log / evaluation / checkpoint intervals and the time limit.
        out_dir: where metrics.jsonl and the checkpoints go (locked while training).
        ema: keep an EMA copy of the weights (`self.ema`); else `self.ema` is the model.
        progress: show a tqdm bar (rank 0 only).
        desc: the bar's label.
        world, rank: the DDP world size and this process's rank.

    Attributes:
        step: optimizer steps taken (across resumes).
        best: (held-out loss, step) of the best evaluation so far, for early stopping
            (`tc.patience`); a subclass saves and restores it with the checkpoint.
        stopped: under early stopping, training is over and the saved checkpoint is its best:
            patience ran out, or the last step did not improve on it. A resumed run stays stopped.
        elapsed, cpu_seconds: wall-clock and CPU seconds of training (across resumes).
        batch_tokens: positions the last step trained on, all processes together (padding
            included), for the tokens/s column; a subclass sets it (0: not logged).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tc: TrainConfig,
        out_dir: Path,
        *,
        ema: bool = True,
        progress: bool = True,
        desc: str = "train",
        world: int = 1,
        rank: int = 0,
    ) -> None:
        self.model, self.tc, self.out_dir = model, tc, out_dir
        self.world, self.rank = world, rank
        self.device = next(model.parameters()).device
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if ema else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.step, self.elapsed, self.cpu_seconds = 0, 0.0, 0.0
        self.best, self.stopped = (math.inf, 0), False
        self.batch_tokens = 0
        self.progress, self.desc = progress and rank == 0, desc
        self.lock: checkpoint.RunLock | None = None

    # -- what a subclass provides ---------------------------------------------------------
    def batch_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of step `self.step` and its terms (floats, for the log)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out figures of the current (EMA) weights."""
        raise NotImplementedError

    def save(self) -> None:
        """Write a checkpoint (rank 0)."""
        raise NotImplementedError

    def start_writing(self) -> None:
        """Called once the lock is held, before the first step: write what a new run needs."""

    def mark_stopped(self) -> None:
        """Record in the saved checkpoint (the best one) that training stopped early (rank 0)."""

    # -- one step -------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimizer step: the loss, its gradient, clipping, the NaN guard, the update and the EMA."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.tc)
        loss, terms = self.batch_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.tc.grad_clip if self.tc.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self._stop_if_diverged(loss, grad_norm)
        self.optimizer.step()
        if self.ema is not self.model:
            # EMA with a warm-up of its decay, so short runs are not dominated by the init.
            decay = min(self.tc.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for ema_p, p in zip(self.ema.parameters(), self.model.parameters()):
                    ema_p.lerp_(p, 1 - decay)
        self.step += 1
        return {**terms, "grad_norm": float(grad_norm)}

    def _stop_if_diverged(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Raise `TrainingDiverged` before a non-finite loss or gradient reaches the weights.

        Nothing is saved: the output directory keeps its last checkpoint, all of whose
        weights were finite. Under DDP every process stops at the same step.
        """
        bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(grad_norm)).float().reshape(())
        if self._on_any_process(bad):
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1} (loss {loss.item():.4g}, gradient norm "
                f"{float(grad_norm):.4g}); {self.last_checkpoint()}; lower the learning rate "
                f"(now {self.tc.lr:g})"
            )

    def last_checkpoint(self) -> str:
        """What a stop leaves behind, in words."""
        return "nothing was saved"

    # -- the loop -------------------------------------------------------------------------
    def run(self, on_log: Callable[[dict], None] | None = None) -> dict[str, dict]:
        """Train until `tc.steps` (or the time limit); returns the last logged rows by split.

        Holds the output directory's lock meanwhile (`checkpoint.RunLock`).
        """
        if self.rank == 0:
            self.lock = checkpoint.RunLock(self.out_dir)
        try:
            if self.rank == 0:
                self.start_writing()
            return self._loop(on_log)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def _loop(self, on_log: Callable[[dict], None] | None) -> dict[str, dict]:
        tc = self.tc
        bar = tqdm(total=tc.steps, initial=self.step, disable=not self.progress, desc=self.desc, dynamic_ncols=True)
        window = RunningMean()
        window_steps, window_tokens, window_start = 0, 0, time.perf_counter()
        last: dict[str, dict] = {}
        session_start, cpu_start = time.perf_counter(), time.process_time()
        elapsed_at_start, cpu_at_start = self.elapsed, self.cpu_seconds

        def emit(split: str, figures: dict[str, float]) -> None:
            row = {
                "step": self.step,
                "split": split,
                **figures,
                "elapsed": self.elapsed,
                "cpu_seconds": self.cpu_seconds,
            }
            self.log(row)
            last[split] = row
            if on_log:
                on_log(row)

        while self.step < tc.steps and not self.stopped:
            window.add(self.train_step())
            window_tokens += self.batch_tokens
            self.elapsed = elapsed_at_start + time.perf_counter() - session_start
            self.cpu_seconds = cpu_at_start + time.process_time() - cpu_start
            window_steps += 1
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                seconds = time.perf_counter() - window_start
                figures = {**window.result(), "lr": lr_at(self.step - 1, tc)}
                if window_tokens:
                    figures["tokens_per_s"] = window_tokens / seconds
                figures["steps_per_s"] = window_steps / seconds
                bar.set_postfix(loss=f"{figures['loss']:.3f}")
                emit("train", figures)
                window, window_steps, window_tokens, window_start = RunningMean(), 0, 0, time.perf_counter()
            improved = False
            if self.step % tc.eval_every == 0 or self.step == tc.steps:
                held = self.evaluate()
                emit("valid", held)
                if tc.patience:
                    improved = self._judge(held["loss"])
            out_of_time = self._out_of_time()
            if tc.patience:  # only the best weights are ever saved
                if improved or (out_of_time and not self.best[1]):  # out of time before the first evaluation
                    self.save()
                if self.stopped:
                    self.mark_stopped()
            elif self.step % tc.checkpoint_every == 0 or self.step == tc.steps or out_of_time:
                self.save()
            if out_of_time or self.stopped:
                break
        bar.close()
        return last

    def _judge(self, loss: float) -> bool:
        """Early stopping: whether `loss` is a new best; sets `stopped` once `tc.patience`
        evaluations in a row, or the last step's, have not improved on the best."""
        if loss < self.best[0]:
            self.best = (loss, self.step)
            return True
        tc = self.tc
        self.stopped = self.step == tc.steps or self.step - self.best[1] >= tc.patience * tc.eval_every
        return False

    def log(self, row: dict) -> None:
        if self.rank == 0:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def _out_of_time(self) -> bool:
        limit = self.tc.time_limit
        if limit <= 0:
            return False
        return self._on_any_process(torch.tensor(float(self.elapsed >= limit * 60), device=self.device))

    def _on_any_process(self, flag: torch.Tensor) -> bool:
        """Whether `flag` (a 0-dim float, 1 = set) is set on any process: all processes must stop at the same step."""
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
