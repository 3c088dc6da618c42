"""Readers: every format round-trips losslessly and bad input fails with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_kogner.data.labels import label_prompt, load_kind_table, load_label_table
from spacy_kogner.data.readers import (
    CorpusFormatError,
    Sentence,
    Span,
    corpus_label_sets,
    read_corpus,
    read_iob,
    write_corpus,
)

IOB = """-DOCSTART-\tO

IL-2\tB-DNA
gene\tI-DNA
and\tO
NF-kappa\tB-protein
B\tI-protein
.\tO

CD28\tB-protein
binds\tO

-DOCSTART-\tO

T\tB-cell_type
cells\tI-cell_type
"""


def _sentences() -> list[Sentence]:
    return [
        Sentence(["a", "b", "c", "d"], [Span(0, 2, "X", "N::1", "exact"), Span(1, 3, "Y")], "C1", "d1"),
        Sentence(["e"], [Span(0, 1, "X", None, None)], "C1", "d1"),
        Sentence(["f", "g"], [], "C2", None),
    ]


def test_iob_reads_docs_and_spans(tmp_path: Path) -> None:
    p = tmp_path / "JN" / "train.tsv"
    p.parent.mkdir()
    p.write_text(IOB)
    sents = read_corpus(p)
    assert [len(s.tokens) for s in sents] == [6, 2, 2]
    assert sents[0].corpus == "JN"
    assert [(s.start, s.end, s.label) for s in sents[0].spans] == [(0, 2, "DNA"), (3, 5, "protein")]
    assert sents[0].doc_id == sents[1].doc_id != sents[2].doc_id


@pytest.mark.parametrize(
    "tags,expected",
    [
        (["I-X", "I-X", "O"], [(0, 2, "X")]),  # I without B opens a span
        (["B-X", "I-Y", "O"], [(0, 1, "X"), (1, 2, "Y")]),  # I of another label opens a new span
        (["S-X", "B-X", "E-X"], [(0, 1, "X"), (1, 3, "X")]),  # BIOES
        (["U-X", "B-X", "L-X"], [(0, 1, "X"), (1, 3, "X")]),  # BILOU
        (["B-X", "B-X", "O"], [(0, 1, "X"), (1, 2, "X")]),
    ],
)
def test_iob_tag_rules(tmp_path: Path, tags: list[str], expected: list[tuple]) -> None:
    p = tmp_path / "t.tsv"
    p.write_text("".join(f"w{i}\t{t}\n" for i, t in enumerate(tags)))
    assert [(s.start, s.end, s.label) for s in read_iob(p)[0].spans] == expected


@pytest.mark.parametrize(
    "body,line,what",
    [("a\tO\nb\tX-Y\n", 2, "tag"), ("a\tO\nb\n", 2, "token<TAB>tag"), ("a\tO\n \tO\n", 2, "empty")],
)
def test_iob_errors_name_file_and_line(tmp_path: Path, body: str, line: int, what: str) -> None:
    p = tmp_path / "bad.tsv"
    p.write_text(body)
    with pytest.raises(CorpusFormatError, match=rf"bad\.tsv:{line}: .*{what}"):
        read_corpus(p)


@pytest.mark.parametrize("suffix", [".jsonl", ".spacy", ".json"])
def test_round_trip_lossless(tmp_path: Path, suffix: str) -> None:
    sents = _sentences()
    p = tmp_path / f"c{suffix}"
    write_corpus(sents, p)
    back = read_corpus(p)
    key = lambda s: (s.tokens, sorted((p.start, p.end, p.label, p.kge, p.match) for p in s.spans), s.corpus)  # noqa: E731
    assert [key(s) for s in back] == [key(s) for s in sents]
    assert [s.doc_id for s in back] == [s.doc_id for s in sents]


def test_iob_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "JN" / "train.tsv"
    p.parent.mkdir()
    p.write_text(IOB)
    sents = read_corpus(p)
    for scheme in ("iob2", "bioes"):
        out = tmp_path / "JN" / f"out_{scheme}.tsv"
        write_corpus(sents, out, scheme=scheme)
        back = read_corpus(out)
        assert [(s.tokens, [(p.start, p.end, p.label) for p in s.spans]) for s in back] == [
            (s.tokens, [(p.start, p.end, p.label) for p in s.spans]) for s in sents
        ]
        # document boundaries survive (ids are derived from the file name)
        assert [s.doc_id.rsplit("-", 1)[1] for s in back] == [s.doc_id.rsplit("-", 1)[1] for s in sents]


def test_gliner_json_shape(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    write_corpus(_sentences(), p, label_sets={"C1": ["X", "Y", "Z"], "C2": ["X"]})
    recs = json.loads(p.read_text())
    assert recs[0]["ner"] == [[0, 1, "X"], [1, 2, "Y"]]
    assert recs[0]["kge"] == ["N::1", None]
    assert recs[0]["labels"] == ["X", "Y", "Z"] and recs[2]["labels"] == ["X"]
    assert recs[0]["corpus"] == "C1"


def test_docbin_ents_and_spans(tmp_path: Path) -> None:
    import spacy
    from spacy.tokens import DocBin

    p = tmp_path / "c.spacy"
    write_corpus(_sentences(), p)
    docs = list(DocBin().from_disk(p).get_docs(spacy.blank("en").vocab))
    assert len(docs[0].spans["sc"]) == 2 and docs[0].spans["sc"][0].kb_id_ == "N::1"
    assert len(docs[0].ents) == 0  # overlapping: not flat
    assert [e.label_ for e in docs[1].ents] == ["X"]


@pytest.mark.parametrize(
    "content,line,what",
    [
        (
            '[\n{"tokenized_text": ["a"], "ner": []},\n{"tokenized_text": ["a"], "ner": [[0, 3, "X"]]}\n]',
            3,
            "span",
        ),
        ('[\n{"tokenized_text": ["a"]}\n]', 2, "'ner'"),
        ('[\n{"tokenized_text": ["a"], "ner": [}\n]', 2, "invalid JSON"),
        ('[{"tokenized_text": ["a"], "ner": [[0, 0, "X"]], "kge": []}]', 1, "kge"),
    ],
)
def test_gliner_errors(tmp_path: Path, content: str, line: int, what: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(CorpusFormatError, match=rf"bad\.json:{line}: .*{what}"):
        read_corpus(p)


def test_jsonl_and_docbin_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"tokens": ["a"], "spans": []}\n{"tokens": ["a"], "spans": [{"start": 0}]}\n')
    with pytest.raises(CorpusFormatError, match=r"bad\.jsonl:2: .*start/end/label"):
        read_corpus(p)
    q = tmp_path / "bad.spacy"
    q.write_bytes(b"not a docbin")
    with pytest.raises(CorpusFormatError, match="DocBin"):
        read_corpus(q)
    odd = tmp_path / "c.xyz"
    odd.write_text("a\tO\n")
    with pytest.raises(CorpusFormatError, match="suffix"):
        read_corpus(odd)
    assert read_corpus(odd, format="iob")[0].tokens == ["a"]


def test_label_table() -> None:
    table = load_label_table()
    assert table["GENE"].prompt == "gene or gene product"
    assert table["Chemical"].kg_kinds == ["Compound", "Pharmacologic Class"]
    assert table["cell_line"].kg_kinds == []
    assert label_prompt("chemical", table) == "chemical"
    assert load_kind_table()["Side Effect"].gold_label == "Disease"


def test_label_sets_per_corpus() -> None:
    assert corpus_label_sets(_sentences()) == {"C1": ["X", "Y"], "C2": []}


def test_a_bom_is_not_part_of_the_first_token_or_a_sentence(tmp_path: Path) -> None:
    """Excel and Notepad start UTF-8 files with a BOM: before ``-DOCSTART-`` it made a sentence,
    before a token it became part of it."""
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain").mkdir()
    docstart = tmp_path / "bom" / "train.tsv"  # the doc ids hold the file name: keep it the same
    docstart.write_bytes("\ufeff".encode() + IOB.encode())
    plain = tmp_path / "plain" / "train.tsv"
    plain.write_text(IOB, encoding="utf8")
    assert read_iob(docstart) == read_iob(plain) and len(read_iob(plain)) == 3
    first = tmp_path / "first.tsv"
    first.write_bytes("\ufeffAspirin\tB-Chemical\nhelps\tO\n".encode())
    assert read_iob(first)[0].tokens == ["Aspirin", "helps"]
    for suffix in (".json", ".jsonl"):
        clean = tmp_path / f"clean{suffix}"
        write_corpus(_sentences(), clean)
        bom = tmp_path / f"bom{suffix}"
        bom.write_bytes(b"\xef\xbb\xbf" + clean.read_bytes())
        assert read_corpus(bom, corpus="C") == read_corpus(clean, corpus="C")


LINES = ["Aspirin\tB-Chemical", "helps\tO", "", "Fever\tB-Disease", "caf\u00e9\tO"]


@pytest.mark.parametrize("suffix", [".tsv", ".json", ".jsonl"])
def test_a_latin1_corpus_names_file_line_and_byte(tmp_path: Path, suffix: str) -> None:
    if suffix == ".tsv":
        text = "\n".join(LINES) + "\n"
    elif suffix == ".json":
        text = '[\n{"tokenized_text": ["a"], "ner": []},\n{"tokenized_text": ["caf\u00e9"], "ner": []}\n]\n'
    else:
        text = '{"tokens": ["a"], "spans": []}\n{"tokens": ["caf\u00e9"], "spans": []}\n'
    data = text.encode("latin-1")
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(data)
    line = text[: text.index("\u00e9")].count("\n") + 1
    offset = data.index(b"\xe9")
    message = f"corpus{suffix}:{line}: not valid UTF-8 (byte 0xe9 at offset {offset}); re-encode the file as UTF-8"
    with pytest.raises(CorpusFormatError) as err:
        read_corpus(path)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_a_utf16_corpus_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-16")
    with pytest.raises(CorpusFormatError, match=r"corpus\.tsv:1: not valid UTF-8 \(byte 0xff at offset 0; .*UTF-16\)"):
        read_corpus(path)


def test_gliner_records_errors_give_index_and_real_line(tmp_path: Path) -> None:
    """The line is the record's own, also after a string with an escaped quote and a record that
    is not an object; ``match`` shorter than ``ner`` is a format error, not an IndexError."""
    p = tmp_path / "bad.json"
    p.write_text(
        '[\n{"tokenized_text": ["say", "\\"]{"], "ner": []},\n\n7,\n'
        '{"tokenized_text": ["a", "b"], "ner": [[0, 0, "X"], [1, 1, "Y"]], "match": ["exact"]}\n]'
    )
    with pytest.raises(CorpusFormatError, match=r"bad\.json:4: record 1: expected an object"):
        read_corpus(p)
    p.write_text(p.read_text().replace("7,\n", ""))
    with pytest.raises(CorpusFormatError, match=r"bad\.json:4: record 1: 'match' must be a list with one entry per"):
        read_corpus(p)
