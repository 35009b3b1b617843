"""Run-directory I/O: safetensors for tensors, JSON for everything else, atomic writes.

A run directory holds

    config.json          the full Config
    vocab.json           the Vocab
    model.safetensors    raw weights          ema.safetensors   EMA weights (used to sample)
    optimizer.safetensors + train_state.json  everything needed to resume exactly
    metrics.jsonl        one JSON object per logged step
    conditions.json      the slot=value labels of a run trained with model.condition=slots

Every file is written to a temporary name and renamed, so an interrupted write leaves
the previous version intact. Loading never unpickles: safetensors and JSON cannot run code.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model


def _atomic(path: Path, write) -> None:  # noqa: ANN001 - write(tmp_path) fills the file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path so that readers see the old or the new file, never half of one."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically save a flat dict of tensors as safetensors."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(contiguous, tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing or corrupt file raises ValueError in one line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing checkpoint file: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt or truncated checkpoint {path}: {err}") from None


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or corrupt file raises ValueError in one line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt JSON in {path}: {err}") from None


def save_weights(path: Path, module: torch.nn.Module) -> None:
    """Atomically save a module's weights; tied weights (shared tensors) are stored once."""
    _atomic(Path(path), lambda tmp: save_model(module, tmp))


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load weights saved by `save_weights`, naming the file if names or shapes do not match."""
    load_tensors(path)  # one clear error for a missing, truncated or corrupt file
    try:
        load_model(module, str(path), strict=True, device=str(next(module.parameters()).device))
    except (RuntimeError, ValueError, KeyError) as err:
        first = " ".join(str(err).strip().splitlines()[:2])
        raise ValueError(f"weights in {path} do not fit this model: {first}") from None


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and plain data (JSON)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "scalars": {}}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                plain["scalars"][f"{index}.{name}"] = value
    return tensors, plain


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], plain: dict[str, Any]
) -> None:
    """Inverse of `optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(plain["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": plain["param_groups"]})


class RunLock:
    """One writer per run directory: RUN/.lock holds the writer's host and process id.

    Taken with O_CREAT | O_EXCL, so of two processes exactly one gets it. A lock whose
    process is gone (same host, pid not running) is stale and taken over.

    Raises:
        ValueError: another live process holds the lock (named in the message).
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / self.NAME
        self.owner = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.path.read_text(encoding="utf-8").strip() if self.path.is_file() else ""
                if not self._stale(holder):
                    raise ValueError(
                        f"{run_dir} is being written by another process (host and pid: {holder or 'unknown'}); "
                        f"wait for it to finish, or remove {self.path} if it is gone"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.owner + "\n")
            return
        raise ValueError(f"could not lock {run_dir}: another process keeps taking {self.path}")

    @staticmethod
    def _stale(holder: str) -> bool:
        """Whether the process named in a lock file is gone (only decidable on this host)."""
        host, _, pid = holder.rpartition(" ")
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def release(self) -> None:
        """Remove the lock if it is still this process's."""
        try:
            if self.path.read_text(encoding="utf-8").strip() == self.owner:
                self.path.unlink()
        except FileNotFoundError:
            pass
