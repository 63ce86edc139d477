"""Readers for the evaluation and training sets bertkit uses, each returning plain dataclasses.

| reader          | format (see ../shared/data/README.md)                                  | returns           |
|-----------------|------------------------------------------------------------------------|-------------------|
| read_stsb       | TSV, no header: genre, file, year, id, score, s1, s2 [, extra ...]     | list[SentencePair] |
| read_sick       | TSV: pair_ID, A, B, relatedness (1-5), entailment label [header opt.]  | list[SentencePair] |
| read_mrpc       | TSV: quality (0/1), id1, id2, s1, s2; BOM and header optional          | list[SentencePair] |
| read_sst2       | TSV with header sentence<TAB>label                                     | list[LabeledText]  |
| read_agnews     | TSV, no header: text, label; HTML entities (`#39;`) decoded            | list[LabeledText]  |
| read_conll      | `token ... TAG` per line, blank line between sentences, -DOCSTART- skipped | list[TaggedSentence] |
| read_pairs      | CSV / TSV / JSONL with named columns (sentence1, sentence2, score ...) | list[SentencePair] |
| read_texts      | plain text, one sentence a line (unlabelled, for whitening / SimCSE)   | list[str]          |
| read_hf         | a Hugging Face `datasets` name (needs `datasets` and the network)      | list[SentencePair] |

`read_dataset(path, fmt=None)` picks the reader; `infer_format(path)` guesses `fmt` from the file name and its
first lines. A malformed row raises `DataError` naming the file and line number; `skip_bad=True` skips such
rows instead, with one warning that counts them and lists the first line numbers.

Layout: `rows` (the returned types, line reading, bad-row reporting), `published` (one reader per
published format), `tables` (CSV / TSV / JSONL with named columns), `formats` (format inference and
`read_dataset`).
"""

from __future__ import annotations

# The public readers and types; helpers stay in their modules.
from bertkit.data.examples import Example, read_examples  # noqa: F401
from bertkit.data.formats import (  # noqa: F401
    read_dataset,
    read_scored_pairs,
    sentences_of,
)
from bertkit.data.infer import (  # noqa: F401
    FORMATS,
    PAIR_FORMATS,
    TEXT_FORMATS,
    infer_format,
)
from bertkit.data.published import (  # noqa: F401
    clean_agnews,
    read_agnews,
    read_conll,
    read_conll_documents,
    read_mrpc,
    read_sick,
    read_sst2,
    read_stsb,
    read_texts,
)
from bertkit.data.rows import (  # noqa: F401
    DataError,
    LabeledText,
    SentencePair,
    TaggedSentence,
)
from bertkit.data.tables import (  # noqa: F401
    has_pair_columns,
    read_hf,
    read_labeled_texts,
    read_pairs,
)
