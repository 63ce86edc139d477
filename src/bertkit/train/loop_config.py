"""What the training loop is asked to do and what it answers (bertkit.train.loop): TrainConfig, TrainResult,
and the shapes of the callbacks a trainer hands it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.errors import OptionError

StepFn = Callable[[nn.Module, Any], torch.Tensor]  # (model, batch on device) -> scalar loss
EvalFn = Callable[[nn.Module], dict[str, float]]  # model in eval mode, under no_grad -> metrics
SaveFn = Callable[[nn.Module, Path], None]  # write a loadable model folder
CHECKPOINT = "checkpoint"  # the resumable state's folder inside output_dir


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs when given
    minutes: float | None = None  # wall-clock budget; the run stops (and evaluates) when it is spent
    batch_size: int = 32
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # of the planned optimizer steps
    max_grad_norm: float | None = 1.0
    seed: int = 42
    eval_every: int | None = None  # optimizer steps; None = once per epoch
    best_metric: str | None = None  # key of eval_fn's dict; None = the first key
    greater_is_better: bool = True
    checkpoint_every: int | None = 200  # optimizer steps; None = never (no resume)
    keep_checkpoint: bool = False
    output_dir: Path | None = None
    mixed_precision: str = "auto"  # auto (bf16/fp16 on CUDA, none on CPU) | bf16 | fp16 | no
    device: str | None = None  # None = cuda when available
    progress: bool | None = None  # None = when stderr is a terminal
    shuffle: bool = True
    decay_by_time: bool = False  # with minutes: warm-up and decay follow the spent share of the budget too

    def validate(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise OptionError(f"--lr {self.lr:g}: give a learning rate above 0, e.g. --lr 5e-5")
        if math.isnan(self.epochs) or (math.isinf(self.epochs) and self.max_steps is None):
            raise OptionError(f"--epochs {self.epochs:g}: give a finite number of passes, e.g. --epochs 3")
        if self.minutes is not None and not math.isfinite(self.minutes):
            raise OptionError(f"--minutes {self.minutes:g}: give a finite budget, e.g. --minutes 10")
        if self.epochs <= 0 and self.max_steps is None:
            raise OptionError(f"epochs must be > 0 (got {self.epochs}), or give max_steps")
        if self.max_steps is not None and self.max_steps < 1:
            raise OptionError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise OptionError("batch_size and grad_accum must be >= 1")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise OptionError(f"mixed_precision must be auto|bf16|fp16|no, got {self.mixed_precision!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise OptionError(f"--warmup {self.warmup_ratio:g}: give a share of the steps in [0, 1), e.g. 0.1")
        if self.minutes is not None and self.minutes <= 0:
            raise OptionError(f"--minutes {self.minutes:g}: give a training budget above 0 minutes, "
                              "e.g. --minutes 10")


@dataclass
class TrainResult:
    steps: int  # optimizer steps taken in total (including those before a resume)
    epochs: float  # epochs completed (fractional when stopped mid-epoch)
    seconds: float  # wall time of this call
    stopped_by: str  # "epochs" | "max_steps" | "minutes"
    train_loss: float  # mean loss of the last 50 micro-batches
    best: dict[str, float] | None  # eval metrics of the kept (best) model
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per evaluation, with "step"
    resumed_from: int | None = None  # step of the checkpoint this run continued from
