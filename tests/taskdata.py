"""Small task files written by the tests themselves (so the task tests run without ../shared/data): labelled
texts, labelled and scored pairs, and CoNLL sentences. Every text is distinct, also after lower-casing."""

from __future__ import annotations

import itertools
from pathlib import Path

GOOD = ["wonderful", "brilliant", "delightful", "moving", "charming", "superb", "gripping", "lovely", "witty", "great"]
BAD = ["dreadful", "boring", "clumsy", "tedious", "awful", "dull", "messy", "weak", "lifeless", "terrible"]
THINGS = ["film", "story", "cast", "ending", "script", "score"]


def reviews() -> list[tuple[str, str]]:
    """60 (text, label) pairs: 30 positive, 30 negative."""
    out = []
    for i, (adj, thing) in enumerate(itertools.product(GOOD, THINGS[:3])):
        out.append((f"The {thing} was {adj} number {i}.", "pos"))
    for i, (adj, thing) in enumerate(itertools.product(BAD, THINGS[:3])):
        out.append((f"The {thing} was {adj} number {i}.", "neg"))
    return out


def write_labelled(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


PAIRS = [  # (a, b, score 0-5, paraphrase label)
    ("A man is playing a guitar.", "Someone is playing an instrument.", 3.8, "1"),
    ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.6, "1"),
    ("The cat sat on the mat.", "A cat is sitting on a rug.", 4.0, "1"),
    ("A child is riding a horse.", "A kid rides a pony.", 3.9, "1"),
    ("A man is playing a guitar.", "The stock market fell sharply today.", 0.0, "0"),
    ("The cat sat on the mat.", "Quantum computers use qubits.", 0.0, "0"),
    ("A plane is taking off.", "A woman is eating an apple.", 0.2, "0"),
    ("A woman is slicing an onion.", "A woman is dancing.", 1.0, "0"),
    ("A dog runs in the park.", "A puppy is running on grass.", 4.2, "1"),
    ("A dog runs in the park.", "The senate passed a new law.", 0.1, "0"),
    ("Two men are boxing.", "Two people are fighting in a ring.", 3.7, "1"),
    ("Two men are boxing.", "A chef is baking bread.", 0.3, "0"),
    ("The sun sets over the sea.", "Sunset over the ocean.", 4.5, "1"),
    ("The sun sets over the sea.", "A boy reads a comic book.", 0.2, "0"),
    ("A girl is singing on stage.", "A young woman sings to a crowd.", 4.1, "1"),
    ("A girl is singing on stage.", "Oil prices rose again.", 0.0, "0"),
]


def write_sts(path: Path) -> Path:
    """STS-B layout: genre, file, year, id, score, a, b."""
    path.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s, _) in enumerate(PAIRS)),
                    encoding="utf-8")
    return path


def write_labelled_pairs(path: Path) -> Path:
    """TSV with a header: sentence1, sentence2, label."""
    path.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, _, y in PAIRS),
                    encoding="utf-8")
    return path


FIRST = ["Angela", "Boris", "Carla", "David", "Elena", "Frank", "Greta", "Hugo", "Irene", "Jonas"]
LAST = ["Merkel", "Novak", "Ortiz", "Petrov", "Quinn", "Rossi", "Schulz", "Tanaka"]
CITIES = ["Paris", "Berlin", "Madrid", "Lisbon", "Vienna", "Prague", "Dublin", "Oslo"]
VERBS = ["visited", "left", "toured", "praised"]


def ner_sentences(n: int = 40) -> list[list[tuple[str, str]]]:
    """n distinct sentences, "First Last VERB City ." and "In City , First VERB Rome .", tagged BIO."""
    out = []
    for i, (f, last, city, verb) in enumerate(itertools.product(FIRST, LAST, CITIES, VERBS)):
        if i % 7:  # spread over the combinations
            continue
        if len(out) % 2:
            out.append([("In", "O"), (city, "B-LOC"), (",", "O"), (f, "B-PER"), (last, "I-PER"), (verb, "O"),
                        ("Rome", "B-LOC"), (".", "O")])
        else:
            out.append([(f, "B-PER"), (last, "I-PER"), (verb, "O"), (city, "B-LOC"), (".", "O")])
        if len(out) == n:
            break
    return out


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    blocks = ["-DOCSTART- O 0\n"] + ["".join(f"{w} {t} 0\n" for w, t in s) for s in sentences]
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path
