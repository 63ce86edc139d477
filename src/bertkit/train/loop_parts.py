"""The pieces the training loop (bertkit.train.loop) is built from: seeding, devices, AdamW and its schedules,
autocast, resumable checkpoints (with every RNG's state) and the progress bar."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.outputs import atomic_folder, atomic_write
from bertkit.train.loop_config import CHECKPOINT, SaveFn, TrainConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors (also inside dicts, lists, tuples and objects with .to) to the device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    # BERT's recipe: no weight decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int,
                    total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def budget_schedule(optimizer: torch.optim.Optimizer, warmup_ratio: float, total: int, seconds: float,
                    started: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up and decay over the progress max(steps done / total, seconds spent / budget): a run that
    the clock will stop still ends at a learning rate near 0 instead of being cut mid-schedule."""

    def factor(step: int) -> float:
        p = min(1.0, max(step / total, (time.monotonic() - started) / seconds))
        if p < warmup_ratio:
            return max(p, 1.0 / total) / warmup_ratio
        return max(0.0, (1.0 - p) / max(1e-9, 1.0 - warmup_ratio))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.mixed_precision == "no":
        return None
    if config.mixed_precision == "fp16":
        return torch.float16
    if config.mixed_precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


# -- checkpoints -------------------------------------------------------------------------------------------


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, state: dict) -> None:
    """Write to a temporary file and rename, so a kill during the write leaves the previous checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "state.pt", lambda tmp: torch.save(state, tmp))


def save_model_folder(save_fn: SaveFn, model: nn.Module, out: Path) -> None:
    """`save_fn` fills a temporary folder that then replaces `out` by a rename: the output folder is always one
    whole model, never a mix with an older one's files. The run's checkpoint moves over into the new folder."""
    with atomic_folder(out, carry=(CHECKPOINT,)) as tmp:
        save_fn(model, tmp)


def is_own_checkpoint(out: Path) -> bool:
    """An output folder that holds an unfinished run's checkpoint: a run with the same --output resumes it."""
    return (Path(out) / CHECKPOINT / "state.pt").is_file()


def load_checkpoint(folder: Path) -> dict | None:
    path = folder / "state.pt"
    if not path.is_file():
        return None
    # weights_only=False: the file is our own checkpoint (it holds python's RNG tuple and plain dicts).
    return torch.load(path, map_location="cpu", weights_only=False)


class Progress:
    """A rich progress bar showing step, loss and the last evaluation; silent when disabled."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
