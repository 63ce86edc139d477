"""Which vector for which task (issue 14): the probes equal scikit-learn probes fit by hand, retrieval metrics
equal a hand computation, NER scores count entities as `train ner` does, and a report runs each distinct input
through the model once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from taskdata import (
    PAIRS,
    ner_sentences,
    reviews,
    write_conll,
    write_labelled,
    write_labelled_pairs,
    write_sts,
)

from bertkit.data import SentencePair, read_conll
from bertkit.which.probe import ProbeSettings
from bertkit.which.represent import Representations, sentence_specs
from bertkit.which.retrieval import build_set, retrieval_metrics
from bertkit.which.tasks import TaskOptions, run_task


def hand_probe(settings: ProbeSettings):
    """The probe written out with scikit-learn, from the settings' values."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(settings.Cs), cv=StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed),
        max_iter=settings.max_iter, scoring="accuracy", l1_ratios=(0,), use_legacy_attributes=False))


def test_classify_probe_equals_a_hand_fit_sklearn_probe_on_encode_vectors(encoder, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    rows = reviews()
    train, test = rows[::2] + rows[1::4], rows[3::4]  # 45 / 15, both classes in each
    opts = TaskOptions(test=str(write_labelled(tmp_path / "test.tsv", test)))
    reps = Representations(encoder, sentence_specs(encoder))
    result = run_task("classify", reps, str(write_labelled(tmp_path / "train.tsv", train)), opts)
    by = {s.representation: s for s in result.scores}
    assert set(by) == {"cls", "pooler", "mean", "max", "mean_sqrt_len", "first_last_avg", "mask_prompt"}
    for pooling in ("mean", "cls"):
        x_train = encoder.encode([t for t, _ in train], pooling=pooling)
        x_test = encoder.encode([t for t, _ in test], pooling=pooling)
        probe = hand_probe(ProbeSettings()).fit(x_train, [y for _, y in train])
        pred = probe.predict(x_test)
        gold = [y for _, y in test]
        assert by[pooling].score == pytest.approx(100 * accuracy_score(gold, pred), abs=1e-9)
        assert by[pooling].metrics["macro_f1"] == pytest.approx(100 * f1_score(gold, pred, average="macro"), abs=1e-9)
    assert [s.score for s in result.scores] == sorted((s.score for s in result.scores), reverse=True)


def test_retrieval_metrics_equal_a_hand_computation_with_known_ranks():
    pool = 12
    scores = np.zeros((3, pool))
    # query 0: its one relevant item (2) ranks 1st
    scores[0] = np.linspace(0, -1, pool)
    scores[0, 2] = 5
    # query 1: relevant items 0 and 4 rank 2nd and 11th
    scores[1] = -np.arange(pool, dtype=float)
    order = [7, 0, 1, 2, 3, 5, 6, 8, 9, 10, 4, 11]  # item at each rank
    scores[1, order] = -np.arange(pool, dtype=float)
    # query 2: relevant item 7 ranks 11th (outside the top 10); items 0 and 1 tie and keep pool order
    order = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 7, 11]
    scores[2, order] = -np.arange(pool, dtype=float)
    scores[2, 1] = scores[2, 0]
    m = retrieval_metrics(scores, [{2}, {0, 4}, {7}])
    assert m["recall@1"] == pytest.approx(100 * (1 + 0 + 0) / 3)
    assert m["recall@10"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert m["mrr@10"] == pytest.approx(100 * (1 + 1 / 2 + 0) / 3)


def test_retrieval_positives_pool_and_self_match():
    by_label = build_set([SentencePair(a, b, s, y) for a, b, s, y in PAIRS])
    assert len(by_label.queries) == sum(y == "1" for *_, y in PAIRS)
    assert len(by_label.pool) == len({b for _, b, _, _ in PAIRS})
    by_score = build_set([SentencePair(a, b, s) for a, b, s, _ in PAIRS])  # top fifth of the scores
    assert "top fifth" in by_score.rule and len(by_score.queries) == 4
    plain = build_set([SentencePair("a b", "c d"), SentencePair("c d", "e f")])
    assert plain.queries == ["a b", "c d"] and plain.relevant == [{0}, {1}]


def test_ner_probe_counts_entities_as_train_ner(encoder, tmp_path):
    from bertkit.data.metrics import entity_prf
    from bertkit.heads.predict import encode_sentences
    from bertkit.which.probe_ner import first_pieces, ner_task

    sentences = ner_sentences(40)
    train = read_conll(write_conll(tmp_path / "train.txt", sentences[:30]))
    test = read_conll(write_conll(tmp_path / "test.txt", sentences[30:]))
    predictions: dict[int, list[list[str]]] = {}
    result = ner_task(encoder, train, test, ProbeSettings(), predictions=predictions)
    gold = [s.tags for s in test]
    assert sorted(predictions) == list(range(encoder.model.config.num_hidden_layers + 1))
    for s in result.scores:
        assert s.score == pytest.approx(entity_prf(gold, predictions[s.layers[0]])["f1"], abs=1e-9)
    try:
        from seqeval.metrics import f1_score
    except ImportError:  # pragma: no cover - seqeval comes with the test extra
        pass
    else:  # the CoNLL script's counting, as the reference implements it
        for layer, pred in predictions.items():
            assert 100 * f1_score(gold, pred) == pytest.approx(entity_prf(gold, pred)["f1"], abs=1e-6)
    # by hand on one layer: encode_tokens vectors at the first wordpiece of each word, as train ner aligns words
    layer = 2
    _, words = encode_sentences(encoder.tokenizer, list(train) + list(test))
    feats, tags = [], []
    for s, enc_words, tv in zip(list(train) + list(test), words,
                                encoder.encode_tokens([" ".join(s.tokens) for s in list(train) + list(test)], [layer])):
        pos, idx = first_pieces(enc_words)
        feats.append(tv.vectors[pos].astype(np.float16).astype(np.float32))  # kept as float16, as the probe does
        tags.append([s.tags[i] for i in idx])
    n = len(train)
    probe = hand_probe(ProbeSettings()).fit(np.concatenate(feats[:n]), [t for ts in tags[:n] for t in ts])
    pred = [list(probe.predict(f)) for f in feats[n:]]
    assert pred == predictions[layer]


class ForwardCounter:
    """Every row that goes through a model, as its token ids: a real model, only counted."""

    def __init__(self, monkeypatch):
        from bertkit.model import Bert

        self.rows: list[tuple[int, ...]] = []
        self.padded_calls = 0
        self.lock = threading.Lock()
        packed, padded = Bert.forward_packed, Bert.forward

        def counted_packed(model, input_ids, attention_mask=None, *args, **kwargs):
            with self.lock:
                for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
                    self.rows.append(tuple(i for i, m in zip(ids, mask) if m))
            return packed(model, input_ids, attention_mask, *args, **kwargs)

        def counted_padded(model, *args, **kwargs):
            self.padded_calls += 1
            return padded(model, *args, **kwargs)

        monkeypatch.setattr(Bert, "forward_packed", counted_packed)
        monkeypatch.setattr(Bert, "forward", counted_padded)


def test_report_runs_each_distinct_input_through_the_model_once(encoder, tmp_path, monkeypatch):
    from bertkit.which.report import ReportJob, report

    sts = str(write_sts(tmp_path / "sts.tsv"))
    pairs = str(write_labelled_pairs(tmp_path / "pairs.tsv"))  # the same sentences as sts.tsv
    texts = str(write_labelled(tmp_path / "texts.tsv", reviews()))
    conll = str(write_conll(tmp_path / "ner.txt", ner_sentences(40)))
    counter = ForwardCounter(monkeypatch)
    job = ReportJob([("sts", sts), ("classify", texts), ("pair", pairs), ("ner", conll), ("retrieval", sts)],
                    options=TaskOptions(share=0.25))
    path, results = report(encoder, job, tmp_path / "out")
    sentences = {a for a, *_ in PAIRS} | {b for _, b, *_ in PAIRS} | {t for t, _ in reviews()}
    expected = 2 * len(sentences) + len(PAIRS) + 40  # each text, its [MASK] prompt, each pair together, NER
    assert len(counter.rows) == expected
    assert len(set(counter.rows)) == len(counter.rows)  # no input went through the model twice
    assert counter.padded_calls == 0  # everything took the encoder's fast path
    assert [r.task for r in results] == ["sts", "classify", "pair", "ner", "retrieval"]
    text = path.read_text()
    assert "## Recommendation per task" in text and "(summary.png)" in text
    assert (tmp_path / "out" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == sum(len(r.scores) for r in results)
