"""The one training loop every bertkit trainer uses (classification, NER, pretraining, Sentence-BERT).

    from bertkit.train.loop import TrainConfig, train

    def step(model, batch):                        # returns the scalar loss of one micro-batch
        return model(**batch).loss

    result = train(model, examples, collate, step, TrainConfig(epochs=3, output_dir=out),
                   eval_fn=lambda m: {"accuracy": ...}, save_fn=lambda m, folder: save(m, folder))

What it does: AdamW (no decay on biases / LayerNorm), linear warm-up then linear decay to 0, gradient
clipping, gradient accumulation, autocast (bf16, or fp16 with a scaler) on CUDA, a seeded shuffle per epoch,
a rich progress bar with the running loss, evaluation every `eval_every` steps and at the end of each epoch,
best-model keeping (`save_fn` writes the best model to `output_dir`), and resumable checkpoints.

Resuming: every `checkpoint_every` optimizer steps the loop writes `output_dir/checkpoint/state.pt` (model,
optimizer, scheduler, scaler, the RNG states of python / numpy / torch / CUDA, the data position and the
best metric so far). Re-running the same call finds it and continues, so a run killed at any moment and
resumed ends with the same weights as an uninterrupted one (on the same device; tested on CPU). The order
of each epoch is a permutation drawn from a generator seeded with (seed, epoch), so skipping the batches
already seen needs only the position. After a run finishes the checkpoint is removed (keep_checkpoint=False).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.batching import by_length
from bertkit.errors import InputError, OptionError
from bertkit.train.loop_config import CHECKPOINT, EvalFn, SaveFn, StepFn, TrainConfig, TrainResult
from bertkit.train.loop_parts import (  # noqa: F401  (is_own_checkpoint: re-exported)
    Progress,
    autocast_dtype,
    budget_schedule,
    is_own_checkpoint,
    linear_schedule,
    load_checkpoint,
    make_optimizer,
    rng_state,
    save_checkpoint,
    save_model_folder,
    seed_everything,
    set_rng_state,
    to_device,
)

log = logging.getLogger(__name__)


def train(
    model: nn.Module,
    train_data: Sequence,
    collate: Callable[[list], Any],
    step_fn: StepFn,
    config: TrainConfig,
    eval_fn: EvalFn | None = None,
    save_fn: SaveFn | None = None,
    lengths: Sequence[int] | None = None,
    batcher: Callable[[int], list[torch.Tensor]] | None = None,
) -> TrainResult:
    """Train `model` in place on `train_data` (any sequence of examples; `collate` turns a list of them into
    a batch). With eval_fn, the best evaluated model is kept: save_fn writes it to output_dir (and the model
    is left holding the best weights at the end). Without eval_fn, save_fn writes the final model.

    `lengths` (tokens per example) groups examples of similar length into batches (see epoch_batches), which
    on a CPU can halve the time spent on padding. `batcher(epoch)` replaces the loop's own batching: the index
    batches of that epoch (the same number every epoch), e.g. each drawn from one of several datasets."""
    config.validate()
    if len(train_data) == 0:
        raise InputError("the training set is empty; give a file with at least one example")
    if (save_fn is not None or config.checkpoint_every) and config.output_dir is None:
        raise OptionError("output_dir is needed to save the model or checkpoints")
    started = time.monotonic()
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    run = _Run(model, config, len(train_data), device, eval_fn, save_fn, batcher)
    resumed_from = run.resume()
    show = config.progress if config.progress is not None else sys.stderr.isatty()
    bar = Progress(show, run.total_steps, run.step)
    model.train()
    run.optimizer.zero_grad(set_to_none=True)
    try:
        stopped_by = run.loop(train_data, collate, step_fn, lengths, bar, show, started)
        run.evaluate()
    finally:
        bar.close()

    if eval_fn is None and save_fn is not None:
        save_model_folder(save_fn, model, Path(config.output_dir))
    elif eval_fn is not None and save_fn is not None and not run.last_was_best:
        # The last evaluation was not the best: leave the caller holding the kept (best) weights.
        reload_best(model, Path(config.output_dir), device)
    if run.ckpt_dir is not None and run.ckpt_dir.exists() and not config.keep_checkpoint:
        shutil.rmtree(run.ckpt_dir)
    model.eval()
    return TrainResult(
        steps=run.step,
        epochs=run.epoch + run.batch_pos / run.batches_per_epoch,
        seconds=time.monotonic() - started,
        stopped_by=stopped_by,
        train_loss=sum(run.recent) / len(run.recent) if run.recent else float("nan"),
        best=run.best_metrics,
        history=run.history,
        resumed_from=resumed_from,
    )


class _Run:
    """One call of `train`: the optimizer, schedule and scaler, and where the run stands (step, epoch, batch,
    best metric so far), which is exactly what a checkpoint saves and a resumed run restores."""

    def __init__(self, model: nn.Module, config: TrainConfig, n: int, device: torch.device,
                 eval_fn: EvalFn | None, save_fn: SaveFn | None,
                 batcher: Callable[[int], list[torch.Tensor]] | None = None):
        self.model, self.config, self.n, self.device = model, config, n, device
        self.eval_fn, self.save_fn, self.batcher = eval_fn, save_fn, batcher
        self.amp_dtype = autocast_dtype(config, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.batches_per_epoch = len(batcher(0)) if batcher is not None else math.ceil(n / config.batch_size)
        steps_per_epoch = math.ceil(self.batches_per_epoch / config.grad_accum)
        self.total_steps = (config.max_steps if config.max_steps is not None
                            else max(1, math.ceil(config.epochs * steps_per_epoch)))
        seed_everything(config.seed)
        self.optimizer = make_optimizer(model, config)
        if config.decay_by_time and config.minutes is not None:
            self.scheduler = budget_schedule(self.optimizer, config.warmup_ratio, self.total_steps,
                                             config.minutes * 60, time.monotonic())
        else:
            self.scheduler = linear_schedule(self.optimizer, int(config.warmup_ratio * self.total_steps),
                                             self.total_steps)
        self.step, self.epoch, self.batch_pos = 0, 0, 0
        self.best_value: float | None = None
        self.best_metrics: dict[str, float] | None = None
        self.history: list[dict[str, float]] = []
        self.last_was_best = False
        self.recent: list[float] = []  # losses of the last 50 micro-batches
        self.ckpt_dir = Path(config.output_dir) / CHECKPOINT if config.output_dir is not None else None

    def resume(self) -> int | None:
        """Continue from output_dir/checkpoint when it holds this run's checkpoint; the step resumed from."""
        if self.ckpt_dir is None or not self.config.checkpoint_every:
            return None
        state = load_checkpoint(self.ckpt_dir)
        if state is None:
            return None
        if state["total_steps"] != self.total_steps or state["n_examples"] != self.n:
            raise OptionError(
                f"{self.ckpt_dir} holds a checkpoint of a different run ({state['n_examples']} examples, "
                f"{state['total_steps']} steps planned; this run: {self.n}, {self.total_steps}); delete it or use "
                "another --output"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_pos = state["step"], state["epoch"], state["batch_pos"]
        self.best_value, self.best_metrics, self.history = state["best_value"], state["best_metrics"], state["history"]
        set_rng_state(state["rng"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)",
                 self.ckpt_dir, self.step, self.epoch, self.batch_pos)
        return self.step

    def checkpoint(self) -> None:
        save_checkpoint(self.ckpt_dir, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
            "epoch": self.epoch, "batch_pos": self.batch_pos, "best_value": self.best_value,
            "best_metrics": self.best_metrics, "history": self.history, "rng": rng_state(),
            "total_steps": self.total_steps, "n_examples": self.n,
            "config": asdict(self.config) | {"output_dir": str(self.config.output_dir)},
        })

    def evaluate(self) -> None:
        """Run eval_fn; keep (save) the model when its metric is the best so far."""
        if self.eval_fn is None:
            return
        config = self.config
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.eval_fn(self.model).items()}
        self.model.train()
        self.history.append({"step": self.step, **metrics})
        key = config.best_metric or next(iter(metrics))
        if key not in metrics:
            raise OptionError(f"best_metric {key!r} is not among the evaluation metrics {sorted(metrics)}")
        value = metrics[key]
        best = self.best_value
        better = best is None or (value > best if config.greater_is_better else value < best)
        log.info("step %d: %s%s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
                 " (best)" if better else "")
        self.last_was_best = better
        if better:
            self.best_value, self.best_metrics = value, metrics
            if self.save_fn is not None:
                save_model_folder(self.save_fn, self.model, Path(config.output_dir))

    def optimizer_step(self) -> None:
        """Clip, step, schedule; the accumulated gradients are then cleared."""
        if self.config.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def loop(self, train_data: Sequence, collate: Callable[[list], Any], step_fn: StepFn,
             lengths: Sequence[int] | None, bar: Progress, show: bool, started: float) -> str:
        """Epochs of micro-batches until the planned steps or the time budget are spent; why it stopped."""
        config, total = self.config, self.total_steps
        while self.step < total:
            batches = (self.batcher(self.epoch) if self.batcher is not None
                       else epoch_batches(self.n, config, self.epoch, lengths))
            micro = 0  # micro-batches accumulated into the current step
            while self.batch_pos < self.batches_per_epoch and self.step < total:
                idx = batches[self.batch_pos].tolist()
                batch = to_device(collate([train_data[i] for i in idx]), self.device)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss = step_fn(self.model, batch)
                self.scaler.scale(loss / config.grad_accum).backward()
                self.recent = (self.recent + [float(loss.detach())])[-50:]
                self.batch_pos += 1
                micro += 1
                if micro < config.grad_accum and self.batch_pos < self.batches_per_epoch:
                    continue
                self.optimizer_step()
                micro = 0
                info = f"loss {sum(self.recent) / len(self.recent):.4f}" + (
                    f"  best {self.best_value:.4f}" if self.best_value is not None else "")
                bar.update(self.step, info)
                if not show and self.step % 50 == 0:  # no bar (a log file): a line now and then instead
                    log.info("step %d/%d  %s  %.0f s", self.step, total, info, time.monotonic() - started)
                if config.eval_every and self.step % config.eval_every == 0 and self.step < total:
                    self.evaluate()
                if config.minutes is not None and time.monotonic() - started > config.minutes * 60:
                    return "minutes"
                if self.ckpt_dir is not None and config.checkpoint_every and self.step % config.checkpoint_every == 0:
                    self.checkpoint()
            if self.batch_pos >= self.batches_per_epoch:
                self.epoch, self.batch_pos = self.epoch + 1, 0
                if not config.eval_every and self.step < total:
                    self.evaluate()  # end of an epoch (the final evaluation follows the loop)
        return "max_steps" if config.max_steps is not None else "epochs"


def epoch_batches(n: int, config: TrainConfig, epoch: int, lengths: Sequence[int] | None) -> list[torch.Tensor]:
    """The batches (index tensors) of one epoch: a permutation seeded by (seed, epoch), so a resumed run sees
    the same ones. With lengths: within windows of 50 batches the examples are sorted by length, and the
    batches are shuffled again, so each batch holds similar lengths while the order stays random."""
    g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g) if config.shuffle else torch.arange(n)
    if lengths is None:
        return list(order.split(config.batch_size))
    shuffled = order.numpy()
    window = config.batch_size * 50
    batches: list[torch.Tensor] = []
    for start in range(0, n, window):
        part = shuffled[start : start + window]
        batches += [torch.from_numpy(b) for b in by_length(lengths, config.batch_size, indices=part)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g)] if config.shuffle else batches


def reload_best(model: nn.Module, folder: Path, device: torch.device) -> None:
    """Load the weights save_fn wrote (model.safetensors, transformers naming) back into the model."""
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    if not path.is_file():
        log.warning("save_fn wrote no %s; keeping the last weights in memory", path)
        return
    saved = load_file(path, device=str(device))
    own = model.state_dict()
    missing = [k for k in own if k not in saved and not k.endswith("decoder.weight")]
    if missing:
        log.warning("cannot reload the best model (%d tensors not in %s); keeping the last weights", len(missing), path)
        return
    model.load_state_dict({k: saved.get(k, own[k]) for k in own})
