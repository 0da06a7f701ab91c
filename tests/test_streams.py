"""Inputs as a pipeline meets them: standard input, named pipes, process substitution,
Arrow IPC, formats read from the first bytes, and paths that look like patterns."""

from __future__ import annotations

import io as binary_io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from infonce_cli import io
from infonce_cli.cli import app
from infonce_cli.errors import InputError, UsageError

from .conftest import ROOT, SAMPLE

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def fresh_streams():
    io.forget_streams()
    yield
    io.forget_streams()


@pytest.fixture
def vectors(rng):
    return rng.normal(size=(6, 4)).astype(np.float32)


def _vector_column(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[-1])


def _npy_bytes(values: np.ndarray) -> bytes:
    buffer = binary_io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def _fill_fifo(path: Path, data: bytes, delay: float = 0.0) -> threading.Thread:
    """A thread that opens the named pipe for writing (after ``delay``) and writes ``data``."""
    def write() -> None:
        time.sleep(delay)
        with open(path, "wb") as handle:
            handle.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _loss(result) -> float:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["loss"]["mean"]


def _sample_loss() -> float:
    return _loss(CliRunner().invoke(app, ["score", "--query", str(SAMPLE / "queries.npy"),
                                          "--pos", str(SAMPLE / "positives.npy"),
                                          "--format", "json"]))


# ---------------------------------------------------------------- standard input


def test_installed_command_reads_the_query_from_stdin():
    with open(SAMPLE / "queries.npy", "rb") as stdin:
        result = subprocess.run([str(BIN / "infonce"), "score", "--query", "-", "--pos",
                                 "sample_data/positives.npy", "--format", "json"],
                                stdin=stdin, capture_output=True, text=True, timeout=120,
                                cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["loss"]["mean"] == pytest.approx(_sample_loss(), rel=1e-6)


def test_a_parquet_stream_on_stdin_serves_two_columns_and_the_ids():
    """The stream is read once; the vectors of both roles and the id column come from it."""
    data = (SAMPLE / "pairs.parquet").read_bytes()
    result = CliRunner().invoke(app, ["score", "--query", "-", "--query-col", "query", "--pos",
                                      "-", "--pos-col", "positive", "--id-col", "id",
                                      "--format", "json"], input=data)
    from_file = CliRunner().invoke(app, ["score", "--query", str(SAMPLE / "pairs.parquet"),
                                         "--query-col", "query", "--pos",
                                         str(SAMPLE / "pairs.parquet"), "--pos-col", "positive",
                                         "--format", "json"])
    assert _loss(result) == pytest.approx(_loss(from_file), rel=1e-6)


def test_load_embeddings_reads_the_bytes_of_stdin(monkeypatch, vectors):
    stdin = binary_io.TextIOWrapper(binary_io.BytesIO(_npy_bytes(vectors)))
    monkeypatch.setattr(sys, "stdin", stdin)
    loaded = io.load_embeddings("-")
    assert loaded.label == "<stdin>"
    np.testing.assert_array_equal(np.asarray(loaded.values), vectors)
    again = io.load_embeddings("-")  # the stream is spent; its bytes were kept
    np.testing.assert_array_equal(np.asarray(again.values), vectors)


def test_empty_stdin_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(sys, "stdin", binary_io.TextIOWrapper(binary_io.BytesIO(b"")))
    with pytest.raises(InputError, match="^<stdin>: empty input$"):
        io.load_embeddings("-")


# ---------------------------------------------------------------- pipes


@pytest.mark.parametrize("kind", ["npy", "parquet", "arrow-stream", "arrow-file", "npz"])
def test_a_named_pipe_is_read_whole_in_any_format(tmp_path, vectors, kind):
    fifo = tmp_path / "in.pipe"
    os.mkfifo(fifo)
    buffer = binary_io.BytesIO()
    table = pa.table({"v": _vector_column(vectors)})
    if kind == "npy":
        buffer.write(_npy_bytes(vectors))
    elif kind == "npz":
        np.savez(buffer, v=vectors)
    elif kind == "parquet":
        pq.write_table(table, buffer, row_group_size=4)
    elif kind == "arrow-stream":
        with pa.ipc.new_stream(buffer, table.schema) as writer:
            writer.write_table(table, max_chunksize=4)
    else:
        with pa.ipc.new_file(buffer, table.schema) as writer:
            writer.write_table(table, max_chunksize=4)
    writer_thread = _fill_fifo(fifo, buffer.getvalue())
    loaded = io.load_embeddings(str(fifo))
    writer_thread.join(10)
    np.testing.assert_array_equal(np.asarray(loaded.values), vectors)
    np.testing.assert_array_equal(loaded.values[3:6], vectors[3:6])


def test_the_cli_scores_a_named_pipe(tmp_path):
    fifo = tmp_path / "q.pipe"
    os.mkfifo(fifo)
    thread = _fill_fifo(fifo, (SAMPLE / "queries.npy").read_bytes())
    result = CliRunner().invoke(app, ["score", "--query", str(fifo), "--pos",
                                      str(SAMPLE / "positives.npy"), "--format", "json"])
    thread.join(10)
    assert _loss(result) == pytest.approx(_sample_loss(), rel=1e-6)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_process_substitution(tmp_path):
    command = (f"'{BIN / 'infonce'}' score --query <(cat sample_data/queries.npy) "
               "--pos sample_data/positives.npy --format json")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["loss"]["mean"] == pytest.approx(_sample_loss(), rel=1e-6)


def test_a_pipe_nobody_writes_to_yet_says_what_it_waits_for(tmp_path, monkeypatch, vectors):
    notes: list[str] = []
    monkeypatch.setattr(io, "on_wait", notes.append)
    monkeypatch.setattr(io, "wait_notice_seconds", 0.05)
    fifo = tmp_path / "late.pipe"
    os.mkfifo(fifo)
    thread = _fill_fifo(fifo, _npy_bytes(vectors), delay=0.5)
    loaded = io.load_embeddings(str(fifo))
    thread.join(10)
    np.testing.assert_array_equal(np.asarray(loaded.values), vectors)
    assert notes == [f"waiting for input on {fifo}"]


def test_no_wait_notice_when_the_data_is_there(tmp_path, monkeypatch, vectors):
    notes: list[str] = []
    monkeypatch.setattr(io, "on_wait", notes.append)
    monkeypatch.setattr(io, "wait_notice_seconds", 5.0)
    np.save(tmp_path / "v.npy", vectors)
    io.load_embeddings(str(tmp_path / "v.npy"))
    fifo = tmp_path / "quick.pipe"
    os.mkfifo(fifo)
    thread = _fill_fifo(fifo, _npy_bytes(vectors))
    io.load_embeddings(str(fifo))
    thread.join(10)
    assert notes == []


def test_the_cli_notes_on_stderr_what_it_waits_for(tmp_path, monkeypatch):
    """The command sets ``io.on_wait`` to print a note; the data still arrives."""
    monkeypatch.setattr(io, "wait_notice_seconds", 0.05)
    fifo = tmp_path / "late.pipe"
    os.mkfifo(fifo)
    thread = _fill_fifo(fifo, (SAMPLE / "queries.npy").read_bytes(), delay=0.5)
    result = CliRunner().invoke(app, ["score", "--query", str(fifo), "--pos",
                                      str(SAMPLE / "positives.npy"), "--format", "json"])
    thread.join(10)
    assert result.exit_code == 0, result.stderr
    assert f"note: waiting for input on {fifo}" in result.stderr


@pytest.mark.parametrize("args", [
    ("score", "--query", "{fifo}", "--pos", "missing.npy"),
    ("compare", "--query-a", "{fifo}", "--pos-a", "{pos}", "--query-b", "{pos}",
     "--pos-b", "missing.npy"),
    ("retrieval", "--query", "{fifo}", "--corpus", "{pos}", "--qrels", "missing.npy"),
])
def test_a_missing_file_is_reported_before_a_pipe_is_waited_on(tmp_path, args):
    """Nobody writes to the pipe: the mistake in another input is still reported at once."""
    fifo = tmp_path / "idle.pipe"
    os.mkfifo(fifo)
    command = [str(BIN / "infonce"), *(arg.format(fifo=fifo, pos=SAMPLE / "positives.npy")
                                       for arg in args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, "error: missing.npy: no such file\n")


# ---------------------------------------------------------------- formats


def _arrow_file(path: Path, table: pa.Table, stream: bool = False) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        opened = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opened(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=4)


@pytest.mark.parametrize("layout", ["file", "stream", "feather"])
def test_arrow_ipc_vector_columns(tmp_path, rng, layout):
    values = rng.normal(size=(10, 3, 4)).astype(np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 4)
    table = pa.table({"id": [f"n{i}" for i in range(10)], "q": _vector_column(values[:, 0]),
                      "neg": pa.FixedSizeListArray.from_arrays(inner, 3),
                      "neg_ids": pa.array([[i, i + 1, i + 2] for i in range(10)])})
    path = tmp_path / f"x.{ {'file': 'arrow', 'stream': 'arrows'}.get(layout, layout)}"
    if layout == "feather":
        feather.write_feather(table, path, chunksize=4)  # lz4-compressed by default
    else:
        _arrow_file(path, table, stream=layout == "stream")
    rows = io.load_embeddings(str(path), column="neg", ndims=(2, 3)).values
    assert rows.shape == (10, 3, 4)
    np.testing.assert_array_equal(rows[2:9], values[2:9])  # across record batches
    query = io.load_embeddings(str(path), column="q")
    np.testing.assert_array_equal(np.asarray(query.values), values[:, 0])
    assert query.label == f"{path}:q"
    assert io.load_ids(str(path), "id").tolist() == [f"n{i}" for i in range(10)]
    assert io.load_ids(str(path), "neg_ids").shape == (10, 3)
    assert io.is_parquet(str(path))


def test_formats_come_from_the_first_bytes_not_the_name(tmp_path, vectors):
    pq.write_table(pa.table({"v": _vector_column(vectors)}), tmp_path / "table.npy")
    np.save(tmp_path / "array.npy", vectors)
    os.rename(tmp_path / "array.npy", tmp_path / "array.parquet")
    for name in ("table.npy", "array.parquet"):
        np.testing.assert_array_equal(
            np.asarray(io.load_embeddings(str(tmp_path / name)).values), vectors)
    assert io.is_parquet(str(tmp_path / "table.npy"))
    assert not io.is_parquet(str(tmp_path / "array.parquet"))
    with pytest.raises(UsageError, match=r"array\.parquet: a column was given, but this is "
                                          r"\.npy data"):
        io.load_embeddings(str(tmp_path / "array.parquet"), column="v")


def test_the_cli_reads_a_parquet_file_named_npy(tmp_path, monkeypatch):
    shutil.copy(SAMPLE / "pairs.parquet", tmp_path / "pairs.npy")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["score", "-q", "pairs.npy", "--query-col", "query", "-p",
                                      "pairs.npy", "--pos-col", "positive", "--format", "json"])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"", "x.npy: empty file"),
    (b"hello, world", r"x.npy: not a valid \.npy file \(its first bytes are not the \.npy "
                      r"signature\)"),
    (b"ARROW1\x00\x00garbage", r"x.npy: not a readable Arrow IPC file \("),
    (b"\xff\xff\xff\xffgarbage", r"x.npy: not a readable Arrow IPC stream \("),
])
def test_unrecognised_or_broken_content_is_one_clear_error(tmp_path, content, message):
    (tmp_path / "x.npy").write_bytes(content)
    with pytest.raises(InputError, match=message):
        io.load_embeddings(str(tmp_path / "x.npy"))


# ---------------------------------------------------------------- paths and patterns


def test_a_path_that_exists_is_never_a_pattern(tmp_path, monkeypatch, rng):
    monkeypatch.chdir(tmp_path)
    literal, other = (rng.normal(size=(5, 3)).astype(np.float32) for _ in range(2))
    pq.write_table(pa.table({"v": _vector_column(literal)}), "b[1].parquet")
    pq.write_table(pa.table({"v": _vector_column(other)}), "b1.parquet")
    np.save("q[1].npy", literal)
    np.testing.assert_array_equal(np.asarray(io.load_embeddings("b[1].parquet").values), literal)
    np.testing.assert_array_equal(np.asarray(io.load_embeddings("q[1].npy").values), literal)
    assert io.parquet_files("b[1].parquet") == ["b[1].parquet"]
    # a path that does not exist and holds a pattern character is a pattern
    assert io.parquet_files("b?.parquet") == ["b1.parquet"]
    assert io.parquet_files("b[0-9].parquet") == ["b1.parquet"]


def test_a_missing_path_without_pattern_characters_is_no_such_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^nope\.npy: no such file$"):
        io.load_embeddings("nope.npy")


def test_symbolic_link_problems_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink("loop_b.npy", "loop_a.npy")
    os.symlink("loop_a.npy", "loop_b.npy")
    os.symlink("gone.npy", "dangling.npy")
    with pytest.raises(InputError, match=r"^loop_a\.npy: symbolic link loop$"):
        io.load_embeddings("loop_a.npy")
    with pytest.raises(InputError, match=r"^dangling\.npy: no such file \(a symbolic link to "
                                         r"gone\.npy, which does not exist\)$"):
        io.load_embeddings("dangling.npy")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_character_devices_are_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(InputError, match=f"^{device}: is a character device, not a file"):
        io.load_embeddings(device)
    with pytest.raises(InputError, match=f"^{device}: is a character device"):
        io.load_ids(device, "id")


def test_control_characters_in_names_stay_on_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("new\nline.npy", np.ones((3, 2), dtype=np.int64))
    with pytest.raises(InputError) as raised:
        io.load_embeddings("new\nline.npy")
    assert str(raised.value) == ("new\\nline.npy: expected a float array (float16/32/64), "
                                 "got int64")
    with pytest.raises(InputError, match=r"^bell\\x07\\x1f\.npy: no such file$"):
        io.load_embeddings("bell\x07\x1f.npy")
    with pytest.raises(InputError, match="cannot hold a NUL character"):
        io.load_embeddings("nul\x00.npy")


def test_a_pattern_must_match_tables(tmp_path, monkeypatch, vectors):
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"v": _vector_column(vectors)}), "a.parquet")
    np.save("b.npy", vectors)
    with pytest.raises(InputError, match=r"^b\.npy: holds \.npy data, but the parts of \* must "
                                         "be Parquet or Arrow files$"):
        io.load_embeddings("*")


# ---------------------------------------------------------------- ids and descriptions


def test_ids_of_paired_negatives_as_a_list_column(tmp_path):
    table = pa.table({
        "neg_ids": pa.array([[1, 2, 3], [4, 5, 6]], type=pa.list_(pa.int64())),
        "neg_names": pa.array([["a", "b"], ["c", "d"]]),
        "fixed": pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4], pa.int32()), 2),
        "ragged": pa.array([[1, 2], [3]]),
        "holes": pa.array([[1, None], [3, 4]]),
        "names": pa.array(["x", "y"]).dictionary_encode(),
    })
    pq.write_table(table, tmp_path / "ids.parquet")
    path = str(tmp_path / "ids.parquet")
    ids = io.load_ids(path, "neg_ids")
    assert ids.shape == (2, 3)
    assert ids.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert io.load_ids(path, "neg_names").tolist() == [["a", "b"], ["c", "d"]]
    assert io.load_ids(path, "fixed").shape == (2, 2)
    assert io.load_ids(path, "names").tolist() == ["x", "y"]
    with pytest.raises(InputError, match=r"ragged lists: row 1 has 1 ids, row 0 has 2"):
        io.load_ids(path, "ragged")
    with pytest.raises(InputError, match=r"column 'holes' has 1 null ids inside its lists"):
        io.load_ids(path, "holes")
    with pytest.raises(InputError, match=r"no column 'nope'; columns: neg_ids"):
        io.load_ids(path, "nope")


def test_an_id_list_column_beside_the_vectors_leaves_the_choice_clear(tmp_path, vectors):
    """Only float lists are vectors: with one of them, no column needs naming."""
    table = pa.table({"v": _vector_column(vectors), "neg_ids": pa.array([[1, 2]] * 6)})
    pq.write_table(table, tmp_path / "x.parquet")
    loaded = io.load_embeddings(str(tmp_path / "x.parquet"))
    assert loaded.label.endswith("x.parquet:v")


def test_describe_a_table_with_id_and_label_columns(tmp_path, vectors):
    table = pa.table({
        "id": [str(i) for i in range(6)],
        "v": _vector_column(vectors),
        "neg_ids": pa.array([[i, i + 1] for i in range(6)]),
        "labels": pa.array([["a"]] * 5 + [["b", "c"]]),
    })
    pq.write_table(table, tmp_path / "x.parquet")
    info = io.describe_file(str(tmp_path / "x.parquet"))
    assert info["format"] == "Parquet"
    by_name = {entry["name"]: entry for entry in info["arrays"]}
    assert list(by_name) == ["v", "neg_ids", "labels"]
    assert by_name["v"]["shape"] == [6, 4]
    assert "norm_mean" in by_name["v"]
    assert by_name["neg_ids"] == {"name": "neg_ids", "shape": [6, 2], "dtype": "int64"}
    assert by_name["labels"] == {"name": "labels", "shape": [6, None], "dtype": "string"}


def test_describe_id_arrays_and_refuse_unreadable_files(tmp_path):
    np.save(tmp_path / "ids.npy", np.arange(5))
    (entry,) = io.describe_file(str(tmp_path / "ids.npy"))["arrays"]
    assert entry == {"name": None, "shape": [5], "dtype": "int64"}
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="junk.parquet: not a readable Parquet file"):
        io.describe_file(str(tmp_path / "junk.parquet"))
