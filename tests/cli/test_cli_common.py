"""The helpers every command group shares (src/bertkit/cli/common.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_load_encoder_passes_precision_and_backend_to_encoder_load():
    from bertkit.cli.common import load_encoder

    default = load_encoder(None, device="cpu")
    assert (default.precision, default.backend) == ("fp32", "torch")  # None keeps Encoder.load's defaults
    fast = load_encoder(None, "int8", "torch", device="cpu")
    assert (fast.precision, fast.backend) == ("int8", "torch")


def test_load_encoder_refuses_an_unknown_precision_as_a_user_error():
    from bertkit.cli.common import load_encoder
    from bertkit.errors import BertkitError

    with pytest.raises(BertkitError, match="unknown precision 'fp16'"):
        load_encoder(None, "fp16", device="cpu")


def test_the_cli_has_one_way_to_load_an_encoder():
    """Every command loads through common.load_encoder: no second path with its own option checks."""
    import bertkit.cli.common

    folder = Path(bertkit.cli.common.__file__).parent
    callers = {p.name for p in folder.glob("*.py") if "Encoder.load(" in p.read_text(encoding="utf-8")}
    assert callers == {"common.py"}
    assert not [p.name for p in folder.glob("*.py") if "inspect.signature" in p.read_text(encoding="utf-8")]
