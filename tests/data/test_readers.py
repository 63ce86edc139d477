"""Dataset readers on small fixture files written here (quirks and malformed rows included), and on the
shared data when it is present."""

from __future__ import annotations

import logging

import pytest

from bertkit.data import (
    DataError,
    LabeledText,
    SentencePair,
    TaggedSentence,
    infer_format,
    read_agnews,
    read_conll,
    read_dataset,
    read_mrpc,
    read_pairs,
    read_scored_pairs,
    read_sick,
    read_sst2,
    read_stsb,
    read_texts,
    sentences_of,
)


def write(tmp_path, name: str, text: str, bom: bool = False):
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


STSB = (
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.\n"
    'main-news\theadlines\t2016\t0281\t2.5\tUS court "limits" power\tHigh court checks power\tsource A\tsource B\n'
    "\n"
    "main-forums\tdeft\t2015\t0003\t0\tHe left.\tShe stayed.\n"
)


def test_stsb_reads_scores_ignores_extra_fields_and_keeps_quotes(tmp_path):
    pairs = read_stsb(write(tmp_path, "dev.tsv", STSB))
    assert pairs == [
        SentencePair("A plane is taking off.", "An air plane is taking off.", 5.0, None, 1),
        SentencePair('US court "limits" power', "High court checks power", 2.5, None, 2),  # quotes are text
        SentencePair("He left.", "She stayed.", 0.0, None, 4),  # blank line 3 skipped, numbering kept
    ]
    assert infer_format(tmp_path / "dev.tsv") == "stsb"


@pytest.mark.parametrize(
    "row, problem",
    [
        ("g\tf\t2012\t9\tfive\ta\tb", "score 'five' is not a number"),
        ("g\tf\t2012\t9\t7.5\ta\tb", "outside [0, 5]"),
        ("g\tf\t2012\t9\t3.0\ta", "expected 7 tab-separated fields"),
        ("g\tf\t2012\t9\t3.0\t \tb", "empty sentence"),
    ],
)
def test_stsb_malformed_row_names_its_line(tmp_path, row, problem):
    path = write(tmp_path, "bad.tsv", STSB + row + "\n")
    with pytest.raises(DataError) as e:
        read_stsb(path)
    assert "line 5" in str(e.value) and problem in str(e.value)


def test_skip_bad_rows_warns_with_count_and_lines(tmp_path, caplog):
    path = write(tmp_path, "bad.tsv", "g\tf\t2012\t9\tx\ta\tb\n" + STSB + "g\tf\t2012\t9\t3.0\ta\n")
    with caplog.at_level(logging.WARNING, logger="bertkit.data"):
        pairs = read_stsb(path, skip_bad=True)
    assert [p.line for p in pairs] == [2, 3, 5]
    assert "skipped 2 malformed row(s)" in caplog.text and "lines 1, 6" in caplog.text


def test_sick_relatedness_and_entailment_with_optional_header(tmp_path):
    text = (
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "1\tA boy plays.\tA kid plays.\t4.5\tENTAILMENT\n"
        "2\tA dog runs.\tNo dog runs.\t3.6\tCONTRADICTION\n"
    )
    pairs = read_sick(write(tmp_path, "sick.txt", text))
    assert [(p.score, p.label, p.line) for p in pairs] == [(4.5, "ENTAILMENT", 2), (3.6, "CONTRADICTION", 3)]
    assert infer_format(tmp_path / "sick.txt") == "sick"
    with pytest.raises(DataError, match=r"line 2: entailment label 'MAYBE'"):
        read_sick(write(tmp_path, "bad.txt", "1\ta\tb\t4.0\tNEUTRAL\n2\ta\tb\t3.0\tMAYBE\n"))
    with pytest.raises(DataError, match=r"line 1: relatedness score 0.5 is outside \[1, 5\]"):
        read_sick(write(tmp_path, "bad2.txt", "1\ta\tb\t0.5\tNEUTRAL\n"))


def test_mrpc_with_bom(tmp_path):
    text = "1\t702876\t702977\tAmrozi accused his brother.\tHe accused his brother.\n0\t1\t2\tA cat.\tA stock.\n"
    path = write(tmp_path, "mrpc.txt", text, bom=True)
    assert infer_format(path) == "mrpc"
    pairs = read_mrpc(path)
    assert pairs[0] == SentencePair("Amrozi accused his brother.", "He accused his brother.", 1.0, "1", 1)
    assert (pairs[1].label, pairs[1].score) == ("0", 0.0)
    with pytest.raises(DataError, match="line 2: quality 'yes' is not 0 or 1"):
        read_mrpc(write(tmp_path, "bad.txt", text.splitlines()[0] + "\nyes\t1\t2\ta\tb\n", bom=True))


def test_sst2_header_and_labels(tmp_path):
    path = write(tmp_path, "sst2.tsv", "sentence\tlabel\nthe expressive power of the camera \t1\ndull \t0\n")
    assert infer_format(path) == "sst2"
    assert read_sst2(path) == [LabeledText("the expressive power of the camera", "1", 2), LabeledText("dull", "0", 3)]
    with pytest.raises(DataError, match="line 2: label '2' is not 0 or 1"):
        read_sst2(write(tmp_path, "bad.tsv", "sentence\tlabel\nok\t2\n"))
    with pytest.raises(DataError, match="line 3: expected 2 tab-separated fields"):
        read_sst2(write(tmp_path, "bad2.tsv", "sentence\tlabel\nok\t1\nno label\n"))


def test_agnews_decodes_bare_and_regular_entities_and_csv_quoting(tmp_path):
    text = (
        "It #39;s over. Prices rose  #36;5 \\$2.\tSci/Tech\n"
        '"Slow to adapt.&lt;br&gt;&lt;FONT face=""verdana""&gt;-Ellen&lt;/FONT&gt;"\tBusiness\n'
    )
    path = write(tmp_path, "ag.tsv", text)
    assert infer_format(path) == "agnews"
    rows = read_agnews(path)
    assert rows == [LabeledText("It's over. Prices rose $5 $2.", "Sci/Tech", 1),
                    LabeledText("Slow to adapt. -Ellen", "Business", 2)]
    with pytest.raises(DataError, match="line 1: expected 2 tab-separated fields"):
        read_agnews(write(tmp_path, "bad.tsv", "no label here\n"))


def test_conll_sentences_docstart_and_tag_column(tmp_path):
    three = "-DOCSTART- O 0\n\nEU B-ORG 0\nrejects O 0\nGerman B-MISC 0\n\nPeter B-PER 0\nBlackburn I-PER 0\n"
    four = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
    a = read_conll(write(tmp_path, "a.txt", three))
    assert a == [TaggedSentence(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 3),
                 TaggedSentence(["Peter", "Blackburn"], ["B-PER", "I-PER"], 7)]
    b = read_conll(write(tmp_path, "b.txt", four))
    assert b[0].tags == ["B-ORG", "O"]  # the NER column, not the B-NP chunk column
    assert infer_format(tmp_path / "a.txt") == "conll" and infer_format(tmp_path / "b.txt") == "conll"
    with pytest.raises(DataError, match="line 4: no BIO tag"):
        read_conll(write(tmp_path, "bad.txt", "EU B-ORG 0\nrejects O 0\n\nlonely\n"))


def test_generic_csv_tsv_jsonl_pairs(tmp_path):
    csv_path = write(tmp_path, "p.csv", 'sentence1,sentence2,score\n"A man, smiling.",A man.,4.2\nx,y,1\n')
    assert read_pairs(csv_path) == [SentencePair("A man, smiling.", "A man.", 4.2, None, 2),
                                    SentencePair("x", "y", 1.0, None, 3)]
    tsv_path = write(tmp_path, "p.tsv", "premise\thypothesis\tlabel\nA dog.\tAn animal.\tentailment\n")
    assert infer_format(tsv_path) == "tsv"
    assert read_dataset(tsv_path)[0] == SentencePair("A dog.", "An animal.", None, "entailment", 2)
    jsonl = write(tmp_path, "p.jsonl", '{"anchor": "q", "positive": "d"}\n\n{"anchor": "q2", "positive": "d2"}\n')
    assert [(p.a, p.b, p.line) for p in read_dataset(jsonl)] == [("q", "d", 1), ("q2", "d2", 3)]
    named = read_pairs(write(tmp_path, "n.csv", "left,right,sim\na,b,0.5\n"),
                       text_a="left", text_b="right", score="sim")
    assert named == [SentencePair("a", "b", 0.5, None, 2)]


def test_generic_malformed_rows_and_missing_columns(tmp_path):
    with pytest.raises(DataError, match="line 3: expected 3 fields"):
        read_pairs(write(tmp_path, "a.csv", "sentence1,sentence2,score\na,b,1\nc,d\n"))
    with pytest.raises(DataError, match="line 2: score 'high' is not a number"):
        read_pairs(write(tmp_path, "b.csv", "sentence1,sentence2,score\na,b,high\n"))
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_pairs(write(tmp_path, "c.jsonl", '{"sentence1": "a", "sentence2": "b"}\n{oops\n'))
    with pytest.raises(DataError, match="no first-sentence column among text, label"):
        read_pairs(write(tmp_path, "d.csv", "text,label\na,1\n"))
    with pytest.raises(DataError, match="line 2 has no score"):
        read_scored_pairs(write(tmp_path, "e.csv", "sentence1,sentence2,score\na,b,\n"))


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_stsb(tmp_path / "missing.tsv")
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(b"g\tf\t2012\t1\t4.0\ta\tb\ng\tf\t2012\t2\t4.0\tcaf\xe9\tb\n")
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        read_stsb(bad)
    with pytest.raises(DataError, match="has no sentence pairs"):
        read_scored_pairs(write(tmp_path, "s.tsv", "sentence\tlabel\nok\t1\n"))


def test_texts_and_sentences_of(tmp_path):
    assert read_texts(write(tmp_path, "t.txt", "one\n\n two \none\n")) == ["one", "two", "one"]
    pairs = [SentencePair("a", "b"), SentencePair("b", "c")]
    assert sentences_of(pairs) == ["a", "b", "c"]


SHARED = {  # file: (format, rows) as documented in ../shared/data/README.md
    "stsb/train.tsv": ("stsb", 5749), "stsb/dev.tsv": ("stsb", 1500), "sick/train.txt": ("sick", 4500),
    "sick/trial.txt": ("sick", 500), "mrpc/train.txt": ("mrpc", 4076), "sst2/dev.tsv": ("sst2", 6735),
    "agnews/dev.tsv": ("agnews", 10001), "conll2003/valid.txt": ("conll", 3250),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_datasets_read_completely(data_dir, name):
    fmt, rows = SHARED[name]
    path = data_dir / name
    assert infer_format(path) == fmt
    items = read_dataset(path)
    assert len(items) == rows


def test_hub_dataset_without_datasets_is_a_clear_error():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="needs `pip install datasets`"):
            read_dataset("hf:sentence-transformers/stsb:validation")
    else:
        pytest.skip("`datasets` is installed; reading a hub dataset would need the network")
