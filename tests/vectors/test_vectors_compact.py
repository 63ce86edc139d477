"""Compact vectors (bertkit.vectors.compact): sentence-transformers' layouts, int8 round trip, truncation, files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bertkit.errors import BertkitError, OptionError
from bertkit.vectors.compact import (
    Calibration,
    CalibrationError,
    calibrate,
    dequantize,
    fit,
    load_vectors,
    quantize,
    save_vectors,
    truncate,
)

TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply today.",
         "The cat sat on the mat.", "A cat is sitting on a rug.", "Quantum computers use qubits.",
         "Oil prices rose on Monday.", "The central bank kept rates unchanged.", "He scored twice in the final.",
         "Rain is expected tomorrow."]


def st_quantize(vectors, precision, ranges=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers.quantization import quantize_embeddings
    return quantize_embeddings(vectors, precision, ranges=ranges)


@pytest.fixture(scope="module")
def vectors(encoder) -> np.ndarray:
    return encoder.encode(TEXTS, normalize=True)


@pytest.fixture(scope="module")
def cal(encoder) -> Calibration:
    return calibrate(encoder, TEXTS, normalize=True)


def test_binary_is_packbits_of_the_signs_as_sentence_transformers(encoder, vectors):
    ubinary = encoder.encode(TEXTS, normalize=True, dtype="ubinary")
    assert ubinary.dtype == np.uint8 and ubinary.shape == (len(TEXTS), 48)
    np.testing.assert_array_equal(ubinary, np.packbits(vectors > 0, axis=-1))
    binary = encoder.encode(TEXTS, normalize=True, dtype="binary")
    assert binary.dtype == np.int8
    pytest.importorskip("sentence_transformers")
    np.testing.assert_array_equal(ubinary, st_quantize(vectors, "ubinary"))
    np.testing.assert_array_equal(binary, st_quantize(vectors, "binary"))
    # Packed rows unpack to the signs; an odd width pads the last byte with zero bits.
    np.testing.assert_array_equal(dequantize(ubinary, "ubinary", dims=384) > 0, vectors > 0)
    odd = quantize(vectors[:, :13], "ubinary")
    assert odd.shape == (len(TEXTS), 2) and not (odd[:, 1] & 0b111).any()


def test_int8_equals_sentence_transformers_and_round_trips_within_a_bin(encoder, vectors, cal):
    codes = encoder.encode(TEXTS, normalize=True, dtype="int8", calibration=cal)
    ucodes = quantize(vectors, "uint8", cal)
    assert codes.dtype == np.int8 and ucodes.dtype == np.uint8 and codes.shape == vectors.shape
    pytest.importorskip("sentence_transformers")
    np.testing.assert_array_equal(codes, st_quantize(vectors, "int8", cal.ranges))
    np.testing.assert_array_equal(ucodes, st_quantize(vectors, "uint8", cal.ranges))
    for dtype, c in (("int8", codes), ("uint8", ucodes)):
        back = dequantize(c, dtype, cal)
        assert np.all(np.abs(back - vectors) <= cal.steps + 1e-7)  # within the calibration's bin width


def test_dimensions_keep_the_first_n_and_renormalise(encoder, vectors):
    short = encoder.encode(TEXTS, normalize=True, dimensions=64)
    cut = vectors[:, :64] / np.linalg.norm(vectors[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, cut, atol=1e-6)
    np.testing.assert_allclose(truncate(vectors, 384), vectors, atol=1e-6)
    bits = encoder.encode(TEXTS, normalize=True, dimensions=64, dtype="ubinary")
    np.testing.assert_array_equal(bits, np.packbits(cut > 0, axis=-1))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"dtype": "int4"}, "dtype 'int4' is unknown"),
    ({"dimensions": 0}, "dimensions must be between 1 and 384"),
    ({"dimensions": -3}, "dimensions must be between 1 and 384"),
    ({"dimensions": 385}, "dimensions must be between 1 and 384"),
    ({"dtype": "int8"}, "needs a calibration"),
    ({"dtype": "uint8", "dimensions": 64, "calibration": "CAL"}, "384 dimensions"),
    ({"dtype": "int8", "normalize": False, "calibration": "CAL"}, "unit-length"),
])
def test_bad_options_are_user_errors(encoder, cal, tmp_path, kwargs, fragment):
    kwargs = {"normalize": True, **kwargs}
    if kwargs.get("calibration") == "CAL":
        kwargs["calibration"] = cal.save(tmp_path / "c.npz")
    with pytest.raises(BertkitError, match=fragment):
        encoder.encode(TEXTS[:2], **kwargs)


def test_calibration_file_round_trip_and_refusals(cal, tmp_path):
    path = cal.save(tmp_path / "cal.npz")
    back = Calibration.load(path)
    np.testing.assert_array_equal(back.ranges, cal.ranges)
    assert back.digest == cal.digest and back.meta["texts"] == len(TEXTS) and back.meta["unit"] is True
    with pytest.raises(CalibrationError, match="does not exist"):
        Calibration.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="not a bertkit calibration"):
        Calibration.load(tmp_path / "junk.npz")
    with pytest.raises(CalibrationError, match="at least 2"):
        fit(np.zeros((1, 4)))
    with pytest.raises(OptionError):
        quantize(np.zeros((1, 4)), "fp8")


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".jsonl"])
def test_saved_codes_need_their_calibration_to_load(vectors, cal, tmp_path, suffix):
    out = tmp_path / f"v{suffix}"
    codes = quantize(vectors, "int8", cal)
    save_vectors(out, TEXTS, codes, "int8", cal)
    got, dtype, got_cal = load_vectors(out)
    np.testing.assert_array_equal(got, codes)
    assert dtype == "int8" and got_cal.digest == cal.digest
    (tmp_path / "v.calibration.npz").unlink()
    with pytest.raises(CalibrationError, match="calibration"):
        load_vectors(out)
    bits = quantize(vectors, "binary")
    save_vectors(out, TEXTS, bits, "binary")
    got, dtype, _ = load_vectors(out, dtype="binary" if suffix == ".npy" else None)
    np.testing.assert_array_equal(got, bits)
    assert dtype == "binary"
