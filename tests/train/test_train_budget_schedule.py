"""The time-budget learning-rate schedule of the training loop (TrainConfig.decay_by_time with minutes): warm-up
and decay follow max(steps done / planned, seconds spent / budget); and a budget of 0 minutes is refused."""

from __future__ import annotations

import time

import pytest
import torch

from bertkit.errors import OptionError
from bertkit.train.loop import TrainConfig, budget_schedule, train


def factor_at(seconds_ago: float, budget: float, step: int = 0, total: int = 1000, warmup: float = 0.1) -> float:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = budget_schedule(opt, warmup, total, budget, time.monotonic() - seconds_ago)
    return sched.lr_lambdas[0](step)


def test_schedule_follows_the_clock_or_the_steps_whichever_is_further():
    assert factor_at(5, 100) == pytest.approx(0.5, abs=0.01)  # 5 % of the budget in a 10 % warm-up: half way up
    assert factor_at(55, 100) == pytest.approx((1 - 0.55) / 0.9, abs=0.01)  # decaying with the clock
    assert factor_at(200, 100) == 0.0  # budget spent
    assert factor_at(0, 100, step=900) == pytest.approx(0.1 / 0.9, abs=0.01)  # the steps are further along


def test_minutes_zero_is_refused_and_a_budget_run_stops_on_the_clock():
    with pytest.raises(OptionError, match="--minutes 0"):
        TrainConfig(minutes=0).validate()
    model = torch.nn.Linear(2, 1)
    data = [torch.randn(2) for _ in range(8)]
    config = TrainConfig(epochs=1_000_000, minutes=0.02, decay_by_time=True, batch_size=4, checkpoint_every=None,
                         progress=False, lr=0.1)
    result = train(model, data, torch.stack, lambda m, batch: m(batch).pow(2).mean(), config)
    assert result.stopped_by == "minutes" and result.steps > 2
