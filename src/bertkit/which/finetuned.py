"""A fine-tuned model scored on a task's test part, as one more row beside the frozen representations: what
fine-tuning gains over the best frozen vector (`bertkit report --finetuned TASK=DIR`).

| task            | folder made by                          | scored with                                    |
|-----------------|-----------------------------------------|------------------------------------------------|
| classify, pair  | `bertkit train classify` (class labels) | `predict.Classifier`: accuracy, macro-F1       |
| ner             | `bertkit train ner`                     | `predict.Tagger`: entity F1 (metrics.entity_prf) |
| sts, retrieval  | `bertkit train sbert` / `simcse`        | its own pooling (1_Pooling/config.json, else mean) |

A folder of another kind is refused (InputError); a classifier whose labels differ from the file's gives None.
"""

from __future__ import annotations

from bertkit.errors import InputError
from bertkit.heads.folder import st_pooling
from bertkit.which.results import METRIC, Score

KINDS = {"BertForSequenceClassification": "a classifier (bertkit train classify)",
         "BertForTokenClassification": "a token tagger (bertkit train ner)"}
NEEDS = {"classify": "BertForSequenceClassification", "pair": "BertForSequenceClassification",
         "ner": "BertForTokenClassification"}


def check_kind(task: str, folder: str) -> None:
    from bertkit.model import architecture

    arch = architecture(folder)
    want = NEEDS.get(task)
    if want is not None and arch != want:
        what = KINDS.get(arch, f"a plain encoder ({arch or 'no architectures in config.json'})")
        raise InputError(f"--finetuned {task}={folder}: the folder is {what}, but {task} needs {KINDS[want]}")
    if want is None and arch in KINDS:
        raise InputError(f"--finetuned {task}={folder}: the folder is {KINDS[arch]}, but {task} needs a sentence "
                         "encoder (bertkit train sbert or simcse)")


def finetuned_score(task: str, folder: str, test: list, data: str = "") -> Score | None:
    """The fine-tuned model's score on `test` (the items the frozen probes were scored on), or None when
    a classifier's labels do not cover the file's labels."""
    check_kind(task, folder)
    if task in ("classify", "pair"):
        metrics = classifier_metrics(task, folder, test)
    elif task == "ner":
        metrics = tagger_metrics(folder, test)
    else:
        metrics = encoder_metrics(task, folder, test)
    if metrics is None:
        return None
    m = METRIC[task]
    n = metrics.pop("n", len(test))
    return Score(task, "fine-tuned", "fine-tuned", None, m, metrics[m], metrics, "fine-tuned", folder, data, int(n))


def classifier_metrics(task: str, folder: str, test: list) -> dict[str, float] | None:
    from bertkit.data.metrics import accuracy, macro_f1
    from bertkit.heads.predict import Classifier

    clf = Classifier.load(folder)
    if clf.regression:
        raise InputError(f"--finetuned {task}={folder}: the folder is a regression model (scores); {task} needs "
                         "a classifier trained on class labels")
    gold = [str(x.label) for x in test]
    if not set(gold) <= set(clf.labels):
        return None
    if task == "pair":
        preds = clf.predict([p.a for p in test], [p.b for p in test])
    else:
        preds = clf.predict([x.text for x in test])
    pred = [label for label, _ in preds]
    return {"accuracy": 100 * accuracy(gold, pred), "macro_f1": 100 * macro_f1(gold, pred)}


def tagger_metrics(folder: str, test: list) -> dict[str, float] | None:
    from bertkit.data.metrics import entity_prf
    from bertkit.heads.predict import Tagger

    tagger = Tagger.load(folder)
    if not {t for s in test for t in s.tags} <= set(tagger.labels):
        return None
    pred = tagger.tag_sentences([s.tokens for s in test])
    return entity_prf([s.tags for s in test], pred)


def encoder_metrics(task: str, folder: str, test: list) -> dict[str, float]:
    """STS Spearman / Pearson or retrieval recall and MRR of a fine-tuned sentence encoder."""
    from bertkit.encoder import Encoder
    from bertkit.which.evaluate import correlations, cosine, unique_texts
    from bertkit.which.retrieval import build_set, score_set

    enc = Encoder.load(folder)
    pooling = st_pooling(folder)
    if task == "sts":
        texts, ia, ib = unique_texts(test)
        vecs = enc.encode(texts, pooling=pooling)
        spearman, pearson = correlations(cosine(vecs[ia], vecs[ib]), [p.score for p in test])
        return {"spearman": spearman, "pearson": pearson}
    rs = build_set(test)
    vecs = enc.encode(rs.queries + rs.pool, pooling=pooling)
    return score_set(rs, vecs[: len(rs.queries)], vecs[len(rs.queries):]) | {"n": len(rs.queries)}
