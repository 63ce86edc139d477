"""The shared training loop: it learns, keeps the best model, and a run killed mid-way resumes to the same end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bertkit.train.loop import TrainConfig, linear_schedule, train


def toy_data(n: int = 200) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :4].sum(1) > 0).long()
    return list(zip(x, y))


def collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    # Dropout makes the result depend on the torch RNG state, which a resume must restore.
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))


def step(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def accuracy(model, data):
    x, y = collate(data)
    return float((model(x).argmax(1) == y).float().mean())


def save_state(model, folder: Path):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")


def run(output: Path, kill_at: int | None = None, **overrides) -> tuple[nn.Module, object]:
    model, data = toy_model(), toy_data()

    def killing_step(m, batch):
        if kill_at is not None and killing_step.calls == kill_at:
            os._exit(137)  # as abrupt as SIGKILL: no cleanup, no final save
        killing_step.calls += 1
        return step(m, batch)

    killing_step.calls = 0
    config = TrainConfig(epochs=3, batch_size=16, grad_accum=2, lr=1e-2, checkpoint_every=4, output_dir=output,
                         progress=False, **overrides)
    result = train(model, data, collate, killing_step, config, eval_fn=lambda m: {"acc": accuracy(m, data[:100])},
                   save_fn=save_state)
    return model, result


def test_learns_and_keeps_best(tmp_path):
    model, result = run(tmp_path / "out")
    assert result.steps == 3 * 7  # 13 batches of 16 -> 7 steps of 2 micro-batches per epoch
    assert result.stopped_by == "epochs"
    assert [h["step"] for h in result.history] == [7, 14, 21]
    assert result.best["acc"] == max(h["acc"] for h in result.history) > 0.7
    assert accuracy(model.eval(), toy_data()[:100]) == result.best["acc"]  # model holds the kept weights
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "checkpoint").exists()  # removed once the run finished


def test_max_steps_and_schedule(tmp_path):
    _, result = run(tmp_path / "out", max_steps=5, eval_every=2)
    assert result.steps == 5 and result.stopped_by == "max_steps"
    assert [h["step"] for h in result.history] == [2, 4, 5]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup=2, total=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_kill_and_resume_gives_the_same_result(tmp_path):
    reference, ref_result = run(tmp_path / "ref")
    out = tmp_path / "killed"
    # A separate process is killed (os._exit) at micro-batch 23: after the checkpoint of step 12, mid-epoch 2.
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_train_loop as t; "
            f"t.run(__import__('pathlib').Path({str(out)!r}), kill_at=23)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 137, proc.stderr
    assert (out / "checkpoint" / "state.pt").is_file()
    resumed, result = run(out)
    assert result.resumed_from == 12
    assert result.steps == ref_result.steps
    assert result.history == ref_result.history
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="training set is empty"):
        train(toy_model(), [], collate, step, TrainConfig(output_dir=tmp_path, progress=False))
    with pytest.raises(ValueError, match="epochs must be > 0"):
        train(toy_model(), toy_data(), collate, step, TrainConfig(epochs=0, output_dir=tmp_path))


def test_length_grouped_batches_cover_each_example_once():
    from bertkit.train.loop import epoch_batches

    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    config = TrainConfig(batch_size=8)
    batches = epoch_batches(1000, config, 0, lengths)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000)) and len(batches) == 125
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 8 from 1..101 spread ~75
    assert [b.tolist() for b in epoch_batches(1000, config, 0, lengths)] == [b.tolist() for b in batches]  # resumable
    assert [b.tolist() for b in epoch_batches(1000, config, 1, lengths)] != [b.tolist() for b in batches]
