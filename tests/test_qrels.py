"""Retrieval data as BEIR, MTEB and TREC hold it: qrels in every layout, read by content,
lists of row ids, the default id column of a table, and the shipped sample."""

from __future__ import annotations

import io as binary_io
import json
import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from infonce_cli import io
from infonce_cli.errors import InputError, UsageError
from infonce_cli.io import Qrels, default_id_column, load_qrels, load_row_ids

from .conftest import SAMPLE

RETRIEVAL = SAMPLE / "retrieval"
BEIR = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\t17\t1\n"
EXPECTED = (["q1", "q1", "q2"], ["d1", "d2", "17"], [2, 0, 1])


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Files are named relative to a fresh working directory, as messages show them."""
    io.forget_streams()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    io.forget_streams()


def _write(name: str, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    with open(name, "wb") as handle:
        handle.write(data)
    return name


def _triples(qrels: Qrels) -> tuple[list[str], list[str], list[int]]:
    return qrels.query_ids.tolist(), qrels.doc_ids.tolist(), qrels.relevance.tolist()


def _refused(path: str, message: str, loader=load_qrels) -> None:
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        loader(path)


def _table(**columns) -> pa.Table:
    return pa.table(columns)


QRELS_TABLE = {"query-id": ["q1", "q1", "q2"], "corpus-id": ["d1", "d2", "17"],
               "score": pa.array([2, 0, 1], type=pa.int32())}


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("header", ["query-id\tcorpus-id\tscore", "qid\tdocid\trel",
                                    "query_id\tdoc_id\trelevance", "a\tb\tc"])
def test_beir_tsv_with_any_three_column_header(header):
    qrels = load_qrels(_write("qrels.tsv", header + BEIR[BEIR.index("\n"):]))
    assert _triples(qrels) == EXPECTED
    assert qrels.lines.tolist() == [2, 3, 4]
    assert qrels.source == "qrels.tsv"
    assert qrels.numbering == "line"
    assert qrels.relevance.dtype == np.int64
    assert qrels.query_ids.dtype.kind == "U"
    assert len(qrels) == 3
    assert qrels.where(1) == "qrels.tsv:3"


def test_beir_tsv_without_header_crlf_bom_blank_lines_and_spaces():
    text = "\ufeffq1\td1\t2\r\n\r\n q1 \t d2\t0.0\r\nq2\t17\t+1\r\n\n"
    qrels = load_qrels(_write("qrels.tsv", text))
    assert _triples(qrels) == EXPECTED
    assert qrels.lines.tolist() == [1, 3, 4]


def test_beir_ids_may_hold_spaces():
    qrels = load_qrels(_write("qrels.tsv", "query-id\tcorpus-id\tscore\nwhat is x\tdoc 1\t1\n"))
    assert _triples(qrels) == (["what is x"], ["doc 1"], [1])


@pytest.mark.parametrize("separator", [" ", "\t", "  "])
def test_trec_qrels(separator):
    lines = [separator.join(fields) for fields in
             (("q1", "0", "d1", "2"), ("q1", "0", "d2", "0"), ("q2", "Q0", "17", "1"))]
    qrels = load_qrels(_write("qrels.trec", "\n".join(lines) + "\n"))
    assert _triples(qrels) == EXPECTED
    assert qrels.lines.tolist() == [1, 2, 3]


@pytest.mark.parametrize("names", [("query-id", "corpus-id", "score"), ("qid", "docid", "rel")])
def test_jsonl_qrels_with_either_naming(names):
    rows = [("q1", "d1", 2), ("q1", "d2", 0), ("q2", 17, 1.0)]
    text = "\n".join(json.dumps(dict(zip(names, row, strict=True)) | {"extra": [1]})
                     for row in rows)
    qrels = load_qrels(_write("qrels.jsonl", text + "\n\n"))
    assert _triples(qrels) == EXPECTED
    assert qrels.lines.tolist() == [1, 2, 3]


def test_parquet_qrels():
    pq.write_table(_table(**QRELS_TABLE), "qrels.parquet")
    qrels = load_qrels("qrels.parquet")
    assert _triples(qrels) == EXPECTED
    assert qrels.numbering == "row"
    assert qrels.lines.tolist() == [0, 1, 2]
    assert qrels.where(2) == "qrels.parquet: row 2"


def test_parquet_integer_ids_are_text_and_float_relevance_that_is_whole_is_accepted():
    pq.write_table(_table(qid=pa.array([1, 1, 2], type=pa.int64()),
                          docid=pa.array([17, 3, 17], type=pa.uint32()),
                          rel=pa.array([2.0, 0.0, 1.0])), "qrels.parquet")
    qrels = load_qrels("qrels.parquet")
    assert _triples(qrels) == (["1", "1", "2"], ["17", "3", "17"], [2, 0, 1])
    assert qrels.doc_ids[0] == "17"


def test_dictionary_encoded_parquet_columns_and_row_groups():
    table = _table(**QRELS_TABLE)
    table = table.set_column(0, "query-id", table.column("query-id").dictionary_encode())
    pq.write_table(table, "qrels.parquet", row_group_size=2)
    assert _triples(load_qrels("qrels.parquet")) == EXPECTED


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_arrow_qrels(kind):
    table = _table(**QRELS_TABLE)
    if kind == "file":
        feather.write_feather(table, "qrels.arrow", compression="uncompressed")
        path = "qrels.arrow"
    else:
        with pa.OSFile("qrels.arrows", "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
        path = "qrels.arrows"
    assert _triples(load_qrels(path)) == EXPECTED


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", binary_io.TextIOWrapper(binary_io.BytesIO(data)))


def test_qrels_on_stdin(monkeypatch):
    _stdin(monkeypatch, BEIR.encode())
    qrels = load_qrels("-")
    assert _triples(qrels) == EXPECTED
    assert qrels.where(0) == "<stdin>:2"


def test_parquet_qrels_on_stdin(monkeypatch):
    sink = pa.BufferOutputStream()
    pq.write_table(_table(**QRELS_TABLE), sink)
    _stdin(monkeypatch, sink.getvalue().to_pybytes())
    assert _triples(load_qrels("-")) == EXPECTED


def test_qrels_from_a_named_pipe(in_tmp):
    os.mkfifo("qrels.fifo")

    def write() -> None:
        with open("qrels.fifo", "wb") as handle:
            handle.write(b"q1 0 d1 2\nq1 0 d2 0\nq2 0 17 1\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert _triples(load_qrels(str(in_tmp / "qrels.fifo"))) == EXPECTED
    writer.join(timeout=10)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_qrels_through_process_substitution():
    _write("qrels.tsv", BEIR)
    code = ("import sys; from infonce_cli.io import load_qrels; qrels = load_qrels(sys.argv[1]); "
            "print(qrels.where(0).startswith('/dev/fd/'), qrels.relevance.tolist())")
    result = subprocess.run(["bash", "-c", 'exec "$0" -c "$1" <(cat qrels.tsv)', sys.executable,
                             code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True [2, 0, 1]"


def test_a_parquet_dataset_numbers_rows_across_its_parts(in_tmp):
    os.mkdir("qrels")
    pq.write_table(_table(**QRELS_TABLE), "qrels/part-0.parquet")
    pq.write_table(_table(**{"query-id": ["q3", "q1"], "corpus-id": ["d1", "d2"],
                             "score": pa.array([1, 1], type=pa.int32())}), "qrels/part-1.parquet")
    _refused("qrels", "qrels: row 4: query 'q1', document 'd2' judged twice, at rows 1 and 4")


def test_empty_stdin(monkeypatch):
    _stdin(monkeypatch, b"")
    _refused("-", "<stdin>: no judgements (empty input)")


# ---------------------------------------------------------------- detection by content


def test_formats_are_read_from_the_content_not_the_name():
    assert _triples(load_qrels(_write("trec.tsv", "q1 0 d1 2\nq1 0 d2 0\nq2 0 17 1\n"))) == EXPECTED
    assert _triples(load_qrels(_write("beir.txt", BEIR))) == EXPECTED
    jsonl = "".join(json.dumps({"qid": q, "docid": d, "rel": r}) + "\n"
                    for q, d, r in zip(*EXPECTED, strict=True))
    assert _triples(load_qrels(_write("jsonl.tsv", jsonl))) == EXPECTED
    pq.write_table(_table(**QRELS_TABLE), "table.tsv")
    assert _triples(load_qrels("table.tsv")) == EXPECTED


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("text", "message"), [
    (BEIR + "q3\td4\n", "qrels.tsv:5: expected 3 tab-separated fields (query-id, corpus-id, "
                        "score), got 2"),
    (BEIR + "q3\td4\t1\t\n", "qrels.tsv:5: expected 3 tab-separated fields (query-id, "
                             "corpus-id, score), got 4"),
    (BEIR + "q3 d4 1\n", "qrels.tsv:5: expected 3 tab-separated fields (query-id, corpus-id, "
                         "score), got 1"),
    (BEIR + "\n\nq3\td4\t-1\n", "qrels.tsv:7: relevance must be a whole number ≥ 0, got '-1'"),
    (BEIR + "q3\td4\t0.5\n", "qrels.tsv:5: relevance must be a whole number ≥ 0, got '0.5'"),
    (BEIR + "q3\td4\thigh\n", "qrels.tsv:5: relevance must be a whole number ≥ 0, got 'high'"),
    (BEIR + "q3\td4\tnan\n", "qrels.tsv:5: relevance must be a whole number ≥ 0, got 'nan'"),
    (BEIR + "q3\td4\t\n", "qrels.tsv:5: relevance must be a whole number ≥ 0, got ''"),
    (BEIR + "q3\td4\t9223372036854775808\n",
     "qrels.tsv:5: relevance must be a whole number ≥ 0, got '9223372036854775808'"),
    (BEIR + "\td4\t1\n", "qrels.tsv:5: empty query-id"),
    (BEIR + "q3\t \t1\n", "qrels.tsv:5: empty corpus-id"),
    (BEIR + "q1\td9\t1\nq1\td2\t1\n",
     "qrels.tsv:6: query 'q1', document 'd2' judged twice, at lines 3 and 6"),
    ("query-id\tcorpus-id\tscore\n\n", "qrels.tsv: no judgements (only a header line)"),
    ("", "qrels.tsv: no judgements (empty file)"),
    (" \n\n", "qrels.tsv: no judgements (empty file)"),
    ("q1 d1 1\n", "qrels.tsv:1: not a qrels line: expected 3 tab-separated fields (query-id, "
                  "corpus-id, score) as in BEIR, 4 whitespace-separated fields (qid, iteration, "
                  "docid, rel) as in TREC, or a JSON object, got 3 whitespace-separated fields"),
    ("\nq1 0 d1 1\nq1 0 d2\n", "qrels.tsv:3: expected 4 whitespace-separated fields (qid, "
                               "iteration, docid, rel), got 3"),
    ("q1 0 d1 1\nq1 0 d2 -2\n", "qrels.tsv:2: relevance must be a whole number ≥ 0, got '-2'"),
    ("q1 0 d1 1\nq2 0 d1 1\nq1 0 d1 2\n",
     "qrels.tsv:3: query 'q1', document 'd1' judged twice, at lines 1 and 3"),
    (b"q1 0 d1 1\nq1 0 d\xff 1\n", "qrels.tsv:2: not UTF-8 text"),
])
def test_text_qrels_errors(text, message):
    _refused(_write("qrels.tsv", text), message)


@pytest.mark.parametrize(("line", "message"), [
    ('{"query-id": "q2", "corpus-id": "d1"', "not a JSON object (Expecting ',' delimiter: "
                                             "line 1 column 37 (char 36))"),
    ('["q2", "d1", 1]', 'expected a JSON object, got ["q2", "d1", 1]'),
    ('{"query-id": "q2", "score": 1}', 'no field "corpus-id" (or "docid")'),
    ('{"query-id": "q2", "qid": "q2", "corpus-id": "d1", "score": 1}',
     'both "query-id" and "qid" are given; keep one'),
    ('{"query-id": 2.5, "corpus-id": "d1", "score": 1}',
     "query-id must be a string or an integer, got 2.5"),
    ('{"query-id": "q2", "corpus-id": null, "score": 1}',
     "corpus-id must be a string or an integer, got null"),
    ('{"query-id": "", "corpus-id": "d1", "score": 1}', "empty query-id"),
    ('{"query-id": "q2", "corpus-id": "d1", "score": -1}',
     "relevance must be a whole number ≥ 0, got -1"),
    ('{"query-id": "q2", "corpus-id": "d1", "score": 0.5}',
     "relevance must be a whole number ≥ 0, got 0.5"),
    ('{"query-id": "q2", "corpus-id": "d1", "score": true}',
     "relevance must be a whole number ≥ 0, got true"),
    ('{"query-id": "q2", "corpus-id": "d1", "score": "two"}',
     'relevance must be a whole number ≥ 0, got "two"'),
    ('{"query-id": "q1", "corpus-id": "d1", "score": 0}',
     "query 'q1', document 'd1' judged twice, at lines 1 and 3"),
])
def test_jsonl_qrels_errors(line, message):
    text = '{"query-id": "q1", "corpus-id": "d1", "score": 1}\n\n' + line + "\n"
    _refused(_write("qrels.jsonl", text), f"qrels.jsonl:3: {message}")


def test_jsonl_relevance_as_text_is_read_as_in_a_tsv():
    text = '{"qid": "q1", "docid": "d1", "rel": "2"}\n{"qid": "q1", "docid": "d2", "rel": 1.0}\n'
    assert load_qrels(_write("qrels.jsonl", text)).relevance.tolist() == [2, 1]


@pytest.mark.parametrize(("columns", "message"), [
    ({"query-id": ["q1", "q2"], "doc": ["d1", "d2"], "score": [1, 1]},
     'qrels.parquet: no column "corpus-id" (or "docid"); columns: query-id, doc, score'),
    ({"query-id": ["q1"], "qid": ["q1"], "corpus-id": ["d1"], "score": [1]},
     'qrels.parquet: has both columns "query-id" and "qid"; keep one'),
    ({"query-id": ["q1", None], "corpus-id": ["d1", "d2"], "score": [1, 1]},
     "qrels.parquet: row 1: null query-id"),
    ({"query-id": ["q1", "q2"], "corpus-id": ["d1", ""], "score": [1, 1]},
     "qrels.parquet: row 1: empty corpus-id"),
    ({"query-id": [1.5, 2.5], "corpus-id": ["d1", "d2"], "score": [1, 1]},
     "qrels.parquet: column 'query-id' must hold strings or integers, got double"),
    ({"query-id": ["q1", "q2", "q3"], "corpus-id": ["d1", "d2", "d3"], "score": [1, 0, -1]},
     "qrels.parquet: row 2: relevance must be a whole number ≥ 0, got -1"),
    ({"query-id": ["q1", "q2"], "corpus-id": ["d1", "d2"], "score": [1.0, 0.5]},
     "qrels.parquet: row 1: relevance must be a whole number ≥ 0, got 0.5"),
    ({"query-id": ["q1", "q2"], "corpus-id": ["d1", "d2"], "score": [1.0, float("nan")]},
     "qrels.parquet: row 1: relevance must be a whole number ≥ 0, got nan"),
    ({"query-id": ["q1", "q2"], "corpus-id": ["d1", "d2"], "score": [1, None]},
     "qrels.parquet: row 1: relevance must be a whole number ≥ 0, got null"),
    ({"query-id": ["q1", "q2"], "corpus-id": ["d1", "d2"], "score": ["1", "2"]},
     "qrels.parquet: column 'score' must hold whole numbers ≥ 0, got string"),
    ({"query-id": ["q1", "q2", "q1"], "corpus-id": ["d1", "d2", "d1"], "score": [1, 1, 0]},
     "qrels.parquet: row 2: query 'q1', document 'd1' judged twice, at rows 0 and 2"),
    ({"query-id": pa.array([], pa.string()), "corpus-id": pa.array([], pa.string()),
      "score": pa.array([], pa.int64())}, "qrels.parquet: no judgements (no rows)"),
])
def test_table_qrels_errors(columns, message):
    pq.write_table(_table(**columns), "qrels.parquet")
    _refused("qrels.parquet", message)


def test_repeated_pair_counts_integer_and_text_ids_as_one():
    pq.write_table(_table(qid=[1, 2, 1], docid=["17", "3", "17"], rel=[1, 1, 1]), "q.parquet")
    _refused("q.parquet", "q.parquet: row 2: query '1', document '17' judged twice, at rows 0 "
                          "and 2")


def test_arrays_and_missing_files_are_not_qrels():
    np.save("ids.npy", np.arange(3))
    _refused("ids.npy", "ids.npy: holds .npy data, not qrels (BEIR TSV, TREC, JSONL, Parquet or "
                        "Arrow)")
    _refused("nowhere.tsv", "nowhere.tsv: no such file")
    os.mkdir("folder.tsv")
    _refused("folder.tsv", "folder.tsv: no Parquet files found in this directory")


def test_a_qrels_name_with_a_newline_stays_on_one_line():
    _refused(_write("bad\nname.tsv", "q1\td1\t-1\n"),
             "bad\\nname.tsv:1: relevance must be a whole number ≥ 0, got '-1'")


# ---------------------------------------------------------------- row ids


def test_row_ids_from_text():
    ids = load_row_ids(_write("ids.txt", "doc-a\r\n  17  \ndoc b\n"))
    assert ids.tolist() == ["doc-a", "17", "doc b"]
    assert ids.dtype.kind == "U"
    assert load_row_ids(_write("one.txt", "x")).tolist() == ["x"]


def test_row_ids_from_stdin(monkeypatch):
    _stdin(monkeypatch, b"a\nb\n")
    assert load_row_ids("-").tolist() == ["a", "b"]


@pytest.mark.parametrize(("values", "expected"), [
    (np.array([3, 17, 0]), ["3", "17", "0"]),
    (np.array(["a", "bb", "c"]), ["a", "bb", "c"]),
    (np.array([b"a", b"bb", b"c"]), ["a", "bb", "c"]),
])
def test_row_ids_from_npy(values, expected):
    np.save("ids.npy", values)
    ids = load_row_ids("ids.npy")
    assert ids.tolist() == expected
    assert ids.dtype.kind == "U"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("ids.txt", "a\n\nb\n", "ids.txt:2: empty line; every line holds one id"),
    ("ids.txt", "a\nb\n\n", "ids.txt:3: empty line; every line holds one id"),
    ("ids.txt", "a\n \n", "ids.txt:2: empty line; every line holds one id"),
    ("ids.txt", "", "ids.txt: no ids (empty file)"),
    ("ids.txt", "a\nb\nc\nb\na\n", "ids.txt:4: id 'b' appears twice, at lines 2 and 4"),
    ("ids.txt", "a\nb\n a\n", "ids.txt:3: id 'a' appears twice, at lines 1 and 3"),
    ("ids.txt", b"a\n\xff\n", "ids.txt:2: not UTF-8 text"),
    ("ids.npy", np.array([5, 7, 9, 7, 5]), "ids.npy: id '7' appears twice, at rows 1 and 3"),
    ("ids.npy", np.array(["x", "", "y"]), "ids.npy: row 1: empty id"),
    ("ids.npy", np.zeros((2, 3), dtype=np.int64),
     "ids.npy: expected a 1-D array of ids (N,), got shape (2, 3)"),
    ("ids.npy", np.array([0.5, 1.5]), "ids.npy: ids must be integers or strings, got float64"),
    ("ids.npy", np.array([], dtype=np.int64), "ids.npy: no ids (an empty array)"),
])
def test_row_id_errors(name, content, message):
    if name.endswith(".npy"):
        np.save(name, content)
    else:
        _write(name, content)
    _refused(name, message, load_row_ids)


def test_row_ids_of_a_table_come_from_a_column():
    pq.write_table(_table(id=["a", "b"]), "ids.parquet")
    _refused("ids.parquet", "ids.parquet: holds Parquet data; ids must be a text file with one id "
                            "per line or an .npy array (the ids of a table are one of its columns)",
             load_row_ids)


# ---------------------------------------------------------------- default id column


def test_default_id_column_none_one_two():
    vectors = pa.array([[0.5, 1.0], [1.0, 0.5]], type=pa.list_(pa.float32(), 2))
    pq.write_table(_table(embedding=vectors, name=["a", "b"]), "none.parquet")
    pq.write_table(_table(_id=["a", "b"], embedding=vectors), "one.parquet")
    pq.write_table(_table(id=["a", "b"], _id=["c", "d"], embedding=vectors), "two.parquet")
    assert default_id_column("none.parquet") is None
    assert default_id_column("one.parquet") == "_id"
    assert default_id_column("one.parquet", names=("id", "doc_id")) is None
    assert default_id_column("two.parquet", names=("_id", "name")) == "_id"
    with pytest.raises(UsageError) as raised:
        default_id_column("two.parquet", argument="corpus_id_col")
    assert str(raised.value) == ("two.parquet: has columns 'id' and '_id', each of which could "
                                 "hold the ids; choose one with corpus_id_col")
    assert raised.value.for_command_line().endswith("choose one with --corpus-id-col")


def test_default_id_column_of_inputs_that_are_not_tables():
    np.save("q.npy", np.ones((2, 3), dtype=np.float32))
    assert default_id_column("q.npy") is None
    assert default_id_column(_write("ids.txt", "a\nb\n")) is None
    feather.write_feather(_table(**{"query-id": ["a"]}), "q.arrow")
    assert default_id_column("q.arrow") == "query-id"


# ---------------------------------------------------------------- the sample data


def test_sample_retrieval_data_is_consistent():
    queries = pq.read_table(RETRIEVAL / "queries.parquet")
    corpus = pq.read_table(RETRIEVAL / "corpus.parquet")
    for table, rows in ((queries, 400), (corpus, 3141)):
        assert table.num_rows == rows
        assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[384]"
        assert table.schema.field("_id").type == pa.string()
        assert default_id_column(str(RETRIEVAL / "queries.parquet")) == "_id"
    query_ids = set(queries.column("_id").to_pylist())
    doc_ids = corpus.column("_id").to_pylist()
    assert len(query_ids) == 400
    assert len(set(doc_ids)) == len(doc_ids)
    assert all(re.fullmatch(r"doc-[0-9a-f]{8}", doc_id) for doc_id in doc_ids)
    beir = load_qrels(str(RETRIEVAL / "qrels.tsv"))
    trec = load_qrels(str(RETRIEVAL / "qrels.trec"))
    assert _triples(beir) == _triples(trec)
    assert len(beir) == 554
    assert set(beir.query_ids.tolist()) == query_ids
    assert set(beir.doc_ids.tolist()) <= set(doc_ids)
    assert np.bincount(beir.relevance).tolist() == [20, 134, 400]
    relevant = beir.query_ids[beir.relevance >= 1]
    assert np.unique(relevant, return_counts=True)[1].max() >= 2
    assert sum(file.stat().st_size for file in RETRIEVAL.iterdir()) < 5_000_000


def test_sample_corpus_is_the_sample_documents_shuffled():
    corpus = io.load_embeddings(str(RETRIEVAL / "corpus.parquet"))
    vectors = np.asarray(corpus.values)
    documents = np.concatenate([np.load(SAMPLE / "positives.npy"),
                                np.load(SAMPLE / "hard_negatives.npy").reshape(-1, 384),
                                np.load(SAMPLE / "distractors.npy")])
    as_bytes = {row.tobytes() for row in documents}
    assert len(as_bytes) == len(vectors)
    assert {row.tobytes() for row in vectors} == as_bytes
    # Shuffled: the positives are not the corpus's first rows, in order.
    positives = np.load(SAMPLE / "positives.npy")
    assert not np.array_equal(vectors[:400], positives)
    queries = io.load_embeddings(str(RETRIEVAL / "queries.parquet"))
    np.testing.assert_array_equal(np.asarray(queries.values), np.load(SAMPLE / "queries.npy"))


def test_sample_qrels_judge_each_query_s_own_positive_at_2():
    queries = pq.read_table(RETRIEVAL / "queries.parquet").column("_id").to_pylist()
    corpus = pq.read_table(RETRIEVAL / "corpus.parquet")
    row_of = {doc_id: row for row, doc_id in enumerate(corpus.column("_id").to_pylist())}
    vectors = np.asarray(io.load_embeddings(str(RETRIEVAL / "corpus.parquet")).values)
    positives = np.load(SAMPLE / "positives.npy")
    qrels = load_qrels(str(RETRIEVAL / "qrels.tsv"))
    best = qrels.relevance == 2
    judged = dict(zip(qrels.query_ids[best].tolist(), qrels.doc_ids[best].tolist(), strict=True))
    for index, query_id in enumerate(queries):
        np.testing.assert_array_equal(vectors[row_of[judged[query_id]]], positives[index])
