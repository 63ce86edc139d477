"""VectorSpec (bertkit.vectors.post): one check naming each bad field, one apply equal to the steps by hand.

Real vectors of the packaged model; the same spec over HTTP: tests/serve/test_serve_compact.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from bertkit.errors import BertkitError, InputError, OptionError
from bertkit.pooling import normalize_rows
from bertkit.vectors import VectorSpec
from bertkit.vectors.compact import DTYPES, CalibrationError, fit, quantize
from bertkit.vectors.whitening import fit as fit_whitening

TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell today.",
         "The cat sat on the mat.", "A cat is sitting on a rug.", "Quantum computers use qubits.",
         "Oil prices rose on Monday.", "The central bank kept rates unchanged.", "He scored twice.",
         "Rain is expected tomorrow.", "The team won the cup.", "Stocks rallied after the report."]
K = 8  # whitened dimensions: fewer than texts, so the whitening is well defined


@pytest.fixture(scope="module")
def pooled(encoder) -> np.ndarray:
    return encoder.encode(TEXTS)  # raw mean-pooled (n, 384)


@pytest.fixture(scope="module")
def whitening(pooled):
    return fit_whitening(pooled, k=K, pooling="mean", layers=None, model="packaged")


def test_normalize_rows_is_torch_normalize_and_keeps_zero_rows():
    import torch

    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-20, 0.0]], dtype=np.float32)
    got = normalize_rows(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, torch.nn.functional.normalize(torch.from_numpy(x), dim=-1).numpy())
    assert normalize_rows(x.astype(np.float64)).dtype == np.float32


# -- check: every bad field named ----------------------------------------------------------------------------


def bad_cases(tmp_path, pooled, whitening):
    """(spec, error type, field, message fragment)."""
    cal384 = fit(normalize_rows(pooled), pooling="mean", unit=True)
    cal_raw = fit(pooled, pooling="mean", unit=False)
    other = fit_whitening(pooled, k=K, pooling="cls", layers=None)
    return [
        (VectorSpec("nope"), OptionError, "pooling", "unknown pooling 'nope'"),
        (VectorSpec("pooler", [1]), OptionError, "layers", "fixes its own layers"),
        (VectorSpec("mean", []), OptionError, "layers", "at least one layer"),
        (VectorSpec("mask_prompt", template="no placeholder"), OptionError, "template", "{text} once"),
        (VectorSpec(whitening=tmp_path / "none.npz"), InputError, "whitening", "does not exist"),
        (VectorSpec(whitening=other), InputError, "whitening", "fit on pooling=cls"),
        (VectorSpec(dimensions=0), OptionError, "dimensions", "dimensions must be between 1 and 384"),
        (VectorSpec(dimensions=-1), OptionError, "dimensions", "dimensions must be between 1 and 384"),
        (VectorSpec(dimensions=385), OptionError, "dimensions", "dimensions must be between 1 and 384"),
        (VectorSpec(whitening=whitening, dimensions=K + 1), OptionError, "dimensions", f"between 1 and {K}"),
        (VectorSpec(dtype="int4"), OptionError, "dtype", "dtype 'int4' is unknown"),
        (VectorSpec(dtype="int8"), CalibrationError, "calibration", "int8 needs a calibration"),
        (VectorSpec(dtype="binary", calibration=cal384), OptionError, "calibration",
         "calibration is for dtype int8"),
        (VectorSpec(normalize=True, dtype="int8", dimensions=64, calibration=cal384), CalibrationError,
         "calibration", "384 dimensions"),
        (VectorSpec(normalize=True, dtype="uint8", calibration=cal_raw), CalibrationError, "calibration",
         "raw (not normalised)"),
        (VectorSpec(dtype="uint8", calibration=cal384), CalibrationError, "calibration", "unit-length"),
    ]


def test_check_names_each_bad_field(tmp_path, pooled, whitening):
    for spec, kind, field, fragment in bad_cases(tmp_path, pooled, whitening):
        with pytest.raises(kind, match=None) as e:
            spec.check(384)
        assert fragment in str(e.value), (spec, str(e.value))
        assert e.value.param == field, (spec, e.value.param)


def test_check_without_the_model_size_refuses_what_it_can_and_loads_files(tmp_path, pooled):
    with pytest.raises(OptionError, match="dtype 'fp8'"):
        VectorSpec(dtype="fp8").check(None)
    VectorSpec(dimensions=10_000).check(None)  # the size is not known yet: checked with the model
    path = fit(normalize_rows(pooled), pooling="mean", unit=True).save(tmp_path / "cal.npz")
    spec = VectorSpec(normalize=True, dtype="int8", calibration=path).check(None)
    assert spec.calibration.dim == 384 and spec.check(384) == spec.check(384)
    with pytest.raises(TypeError, match="check"):
        VectorSpec(dtype="int8", calibration=path).apply(pooled)  # a bug: apply needs the checked spec


# -- apply: the hand-wired steps -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_equals_the_steps_by_hand_without_whitening(encoder, pooled, dtype):
    unit = normalize_rows(pooled)
    cut = unit[:, :64] / np.linalg.norm(unit[:, :64], axis=1, keepdims=True)
    cal = fit(cut, pooling="mean", unit=True)
    calibration = cal if dtype in ("int8", "uint8") else None
    spec = VectorSpec(normalize=True, dimensions=64, dtype=dtype, calibration=calibration).check(384)
    got = spec.apply(encoder.encode(TEXTS, normalize=spec.pool_normalize))
    want = quantize(cut, dtype, cal)
    assert got.dtype == want.dtype and got.shape == want.shape
    if dtype == "float32":
        np.testing.assert_allclose(got, want, atol=1e-6)
    else:  # codes: a value on a bin's edge may land one code off through float rounding
        assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1
        assert (got == want).mean() > 0.99
    # Encoder.encode takes the same options and gives the same answer
    np.testing.assert_array_equal(encoder.encode(TEXTS, normalize=True, dimensions=64, dtype=dtype,
                                                 calibration=spec.calibration), got)


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_equals_the_steps_by_hand_with_whitening(encoder, pooled, whitening, dtype):
    whitened = (pooled.astype(np.float64) - whitening.mean) @ whitening.matrix  # (n, K)
    whitened = whitened / np.linalg.norm(whitened, axis=1, keepdims=True)
    cut = whitened[:, :6] / np.linalg.norm(whitened[:, :6], axis=1, keepdims=True)
    cal = fit(cut.astype(np.float32), unit=True)
    spec = VectorSpec(whitening=whitening, normalize=True, dimensions=6, dtype=dtype,
                      calibration=cal if dtype in ("int8", "uint8") else None).check(encoder.hidden_size)
    assert spec.pool_normalize is False  # the whitening is fit on raw pooled vectors
    got = spec.apply(encoder.encode(TEXTS, normalize=spec.pool_normalize))
    want = quantize(cut.astype(np.float32), dtype, cal)
    if dtype == "float32":
        np.testing.assert_allclose(got, want, atol=1e-6)
    else:
        assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1
        assert (got == want).mean() > 0.95


def test_plain_float_is_untouched_and_teis_raw_cut_keeps_the_scale(pooled):
    assert VectorSpec().check(384).apply(pooled) is pooled
    raw = VectorSpec(dimensions=16, renormalize=False).check(384).apply(pooled)
    np.testing.assert_array_equal(raw, pooled[:, :16])
    assert raw.flags.c_contiguous  # orjson writes C-contiguous arrays only
    short = VectorSpec(dimensions=16).check(384).apply(pooled)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1, atol=1e-6)


def test_errors_are_user_errors(pooled):
    with pytest.raises(BertkitError):
        VectorSpec(dimensions=True).check(384)  # a boolean is not a number of dimensions
