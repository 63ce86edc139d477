"""The MTEB adapter (issue 31): bertkit.which.mteb.MtebEncoder, run by mteb itself on an STS task defined here
whose data is read from ../shared/data/stsb/dev.tsv (no hub): its score equals `bertkit evaluate`'s."""

from __future__ import annotations

import numpy as np
import pytest

from bertkit.data import read_scored_pairs
from bertkit.errors import OptionError
from bertkit.which.evaluate import evaluate_sts
from bertkit.which.mteb import MtebEncoder

mteb = pytest.importorskip("mteb")

N = 300  # pairs: enough for a stable Spearman, a few seconds per representation


@pytest.fixture(scope="module")
def pairs(data_dir):
    return read_scored_pairs(data_dir / "stsb" / "dev.tsv")[:N]


@pytest.fixture(scope="module")
def task(pairs):
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    class LocalSTSB(AbsTaskSTS):
        metadata = TaskMetadata(
            type="STS", name="BertkitLocalSTSB", main_score="cosine_spearman",
            description="STS-B dev pairs read from a local file (bertkit's test of its MTEB adapter).",
            reference="https://ixa2.si.ehu.eus/stswiki", dataset={"path": "local/stsb-dev", "revision": "local"},
            category="t2t", eval_splits=["test"], eval_langs=["eng-Latn"], date=("2012-01-01", "2017-12-31"),
            dialect=[], domains=[], task_subtypes=[], license="cc-by-sa-4.0", annotations_creators="human-annotated",
            modalities=["text"], sample_creation="found", bibtex_citation="")
        min_score, max_score = 0, 5

        def load_data(self, num_proc=None, **kwargs) -> None:  # local rows, never the hub
            columns = {"sentence1": [p.a for p in pairs], "sentence2": [p.b for p in pairs],
                       "score": [p.score for p in pairs]}
            self.dataset = DatasetDict({"test": Dataset.from_dict(columns)})
            self.data_loaded = True

    return LocalSTSB()


def mteb_score(model: MtebEncoder, task) -> float:
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    (task_result,) = result.task_results
    return task_result.get_score() * 100


@pytest.mark.parametrize(("pooling", "layers", "precision"),
                         [("cls", None, "fp32"), ("mean", None, "fp32"), ("mean", [1, -1], "fp32"),
                          ("mean", None, "int8")])
def test_mteb_scores_a_representation_as_bertkit_evaluate_does(pooling, layers, precision, pairs, task, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BERTKIT_VERDICTS", "off")  # int8 runs as asked
    model = MtebEncoder.load(None, pooling=pooling, layers=layers, precision=precision)
    assert isinstance(model, mteb.models.EncoderProtocol)
    ours = evaluate_sts(model.encoder, pairs, [pooling], layers)[0].spearman
    # Dynamic int8 scales each batch's activations by that batch's range, and MTEB batches the first and the
    # second sentences apart (bertkit evaluate: all distinct sentences together), so int8 agrees to a tenth of
    # a point, not to rounding.
    assert mteb_score(model, task) == pytest.approx(ours, abs=1e-3 if precision == "fp32" else 0.2)
    assert pooling in model.mteb_model_meta.name and precision in model.mteb_model_meta.name


def test_the_protocols_similarities_are_cosine():
    model = MtebEncoder.load(None)
    a, b = np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[6.0, 8.0], [0.0, 2.0]])
    np.testing.assert_allclose(model.similarity(a, b), [[1.0, 0.8], [0.6, 0.0]], atol=1e-6)
    np.testing.assert_allclose(model.similarity_pairwise(a, b), [1.0, 0.0], atol=1e-6)


def test_a_bad_representation_is_refused_before_mteb_runs():
    with pytest.raises(OptionError, match="unknown pooling"):
        MtebEncoder.load(None, pooling="average")
    with pytest.raises(OptionError, match="layer"):
        MtebEncoder.load(None, pooling="pooler", layers=[1])
