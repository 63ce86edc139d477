"""Shared fixtures: the packaged model, small random checkpoints saved by transformers, the data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

# In support.py, so test files can import them: `from conftest import` is ambiguous once a subfolder
# has its own conftest.py.
from support import RANDOM_SHAPES, copy_tokenizer

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data; tests that need it skip with the reason when it is absent (a clone elsewhere)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"dataset folder {DATA_DIR} is absent (it sits beside the repo in CI)")
    return DATA_DIR


@pytest.fixture(scope="session")
def packaged_dir() -> Path:
    from bertkit.model import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="session")
def encoder():
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    from bertkit import Encoder

    return Encoder.load(device="cpu")


@pytest.fixture(scope="session", params=sorted(RANDOM_SHAPES))
def pretraining_checkpoint(request, tmp_path_factory, packaged_dir) -> Path:
    """A folder saved by transformers' BertForPreTraining.save_pretrained (with MLM and NSP heads)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, **RANDOM_SHAPES[request.param])
    model = transformers.BertForPreTraining(config).eval()
    folder = tmp_path_factory.mktemp(f"bert-{request.param}")
    model.save_pretrained(folder)
    copy_tokenizer(packaged_dir, folder)
    return folder
