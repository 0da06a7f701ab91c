"""Loaders: every supported layout reads the same vectors; malformed ones are refused."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infonce_cli.errors import InputError
from infonce_cli.io import NpyRows, check_values, load_embeddings, load_ids, row_stats


@pytest.fixture
def vectors(rng):
    return rng.normal(size=(6, 4)).astype(np.float32)


def _column(values: np.ndarray, kind: str) -> pa.Array:
    flat = pa.array(values.reshape(-1))
    if kind == "fixed":
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[-1])
    offsets = pa.array(np.arange(0, values.size + 1, values.shape[-1], dtype=np.int32))
    if kind == "large":
        return pa.LargeListArray.from_arrays(pa.array(offsets.to_numpy().astype(np.int64)), flat)
    return pa.ListArray.from_arrays(offsets, flat)


@pytest.mark.parametrize("kind", ["fixed", "list", "large"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_parquet_vector_columns(tmp_path, vectors, kind, dtype):
    values = vectors.astype(dtype)
    pq.write_table(pa.table({"name": [str(i) for i in range(6)], "v": _column(values, kind)}),
                   tmp_path / "x.parquet")
    loaded = load_embeddings(str(tmp_path / "x.parquet"))
    assert loaded.label.endswith("x.parquet:v")
    np.testing.assert_array_equal(loaded.values, values)


def test_parquet_paired_negatives_are_lists_of_lists(tmp_path, rng):
    negatives = rng.normal(size=(5, 3, 4)).astype(np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(negatives.reshape(-1)), 4)
    column = pa.FixedSizeListArray.from_arrays(inner, 3)
    pq.write_table(pa.table({"neg": column}), tmp_path / "n.parquet")
    loaded = load_embeddings(str(tmp_path / "n.parquet"), ndims=(2, 3))
    np.testing.assert_array_equal(loaded.values, negatives)
    with pytest.raises(InputError, match=r"nested too deep: expected list<float> \(N, d\)"):
        load_embeddings(str(tmp_path / "n.parquet"))


def test_parquet_ids(tmp_path, vectors):
    pq.write_table(pa.table({"id": ["a", "b", "c", "d", "e", "f"], "v": _column(vectors, "fixed"),
                             "n": pa.array([1, None, 3, 4, 5, 6])}), tmp_path / "x.parquet")
    assert load_ids(str(tmp_path / "x.parquet"), "id").tolist() == list("abcdef")
    with pytest.raises(InputError, match="column 'n' has 1 null ids"):
        load_ids(str(tmp_path / "x.parquet"), "n")
    with pytest.raises(InputError, match="must hold strings or integers"):
        load_ids(str(tmp_path / "x.parquet"), "v")


@pytest.mark.parametrize(("column", "message"), [
    (pa.array([["a", "b"], ["c", "d"]]), "expected float vectors .* got lists of string"),
    (pa.array([[[1.0]], [[2.0]]]), r"nested too deep: expected list<float> \(N, d\), got list"),
    (pa.array([[1.0, None], [2.0, 3.0]]), "1 null values inside the vectors"),
    (pa.array([1.0, 2.0]), "0 list columns"),
])
def test_bad_parquet_columns(tmp_path, column, message):
    pq.write_table(pa.table({"v": column}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match=message):
        load_embeddings(str(tmp_path / "x.parquet"))


def test_npz_choice(tmp_path, vectors):
    np.savez(tmp_path / "one.npz", only=vectors)
    np.savez(tmp_path / "two.npz", a=vectors, b=vectors)
    np.testing.assert_array_equal(load_embeddings(str(tmp_path / "one.npz")).values, vectors)
    assert load_embeddings(str(tmp_path / "two.npz"), key="b").label.endswith("two.npz[b]")
    with pytest.raises(InputError, match=r"holds 2 arrays \(a, b\); choose one"):
        load_embeddings(str(tmp_path / "two.npz"))
    with pytest.raises(InputError, match="no array 'c'; arrays: a, b"):
        load_embeddings(str(tmp_path / "two.npz"), key="c")


def test_pickled_npz_is_never_loaded(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([object()], dtype=object))
    with pytest.raises(InputError, match="holds Python objects"):
        load_embeddings(str(tmp_path / "obj.npz"))


def test_truncated_npy_is_refused_before_mapping(tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors)
    data = (tmp_path / "v.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-10])
    with pytest.raises(InputError, match=r"truncated: the header promises shape \(6, 4\)"):
        load_embeddings(str(tmp_path / "cut.npy"))


def test_npy_rows_are_read_on_demand(tmp_path, rng):
    values = rng.normal(size=(50, 3, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", values)
    rows = load_embeddings(str(tmp_path / "v.npy"), ndims=(3,)).values
    assert isinstance(rows, NpyRows)
    assert rows.shape == (50, 3, 4)
    np.testing.assert_array_equal(rows[7:19], values[7:19])
    np.testing.assert_array_equal(rows[45:99], values[45:])
    assert rows[7:19].flags.writeable
    assert rows[7:19].flags.c_contiguous


def test_fortran_and_big_endian_npy_load_correctly(tmp_path, vectors):
    np.save(tmp_path / "f.npy", np.asfortranarray(vectors))
    np.save(tmp_path / "b.npy", vectors.astype(">f4"))
    for name in ("f.npy", "b.npy"):
        loaded = load_embeddings(str(tmp_path / name)).values
        np.testing.assert_array_equal(np.asarray(loaded[0:6]), vectors)


def test_row_checks_on_paired_arrays_name_the_row_and_negative(tmp_path, rng):
    negatives = rng.normal(size=(4, 3, 2)).astype(np.float32)
    negatives[2, 1] = np.inf
    np.save(tmp_path / "n.npy", negatives)
    embeddings = load_embeddings(str(tmp_path / "n.npy"), ndims=(2, 3))
    with pytest.raises(InputError, match=r"1 row contains NaN or Inf \(first: row 2, negative 1\)"):
        check_values(embeddings, nonzero=True)


def test_row_stats_in_chunks_match_numpy(rng):
    values = rng.normal(size=(1000, 8))
    stats = row_stats(values)
    norms = np.linalg.norm(values, axis=1)
    assert stats.norm_mean == pytest.approx(norms.mean())
    assert (stats.norm_min, stats.norm_max) == (pytest.approx(norms.min()),
                                                pytest.approx(norms.max()))


def test_parquet_directory_glob_and_row_groups_read_as_one_input(tmp_path, rng):
    values = rng.normal(size=(100, 3, 4)).astype(np.float32)
    parts = tmp_path / "parts"
    parts.mkdir()
    for index, start in enumerate(range(0, 100, 40)):
        chunk = values[start:start + 40]
        inner = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), 4)
        table = pa.table({"neg": pa.FixedSizeListArray.from_arrays(inner, 3)})
        pq.write_table(table, parts / f"part-{index}.parquet", row_group_size=16)
    (parts / "_SUCCESS").write_text("")
    for path in (str(parts), str(parts / "part-*.parquet")):
        rows = load_embeddings(path, ndims=(2, 3)).values
        assert rows.shape == (100, 3, 4)
        np.testing.assert_array_equal(rows[0:100], values)
        np.testing.assert_array_equal(rows[30:75], values[30:75])  # across files and groups


def test_a_bad_row_group_late_in_a_file_is_reported_with_its_rows(tmp_path):
    column = pa.array([[1.0, 2.0]] * 20 + [[1.0]] + [[3.0, 4.0]] * 3)
    pq.write_table(pa.table({"v": column}), tmp_path / "x.parquet", row_group_size=8)
    rows = load_embeddings(str(tmp_path / "x.parquet")).values
    with pytest.raises(InputError, match=r"ragged lists: row 20 has 1 values, row 16 has 2"):
        rows[0:24]


@pytest.mark.parametrize(("path", "message"), [
    ("nowhere/*.parquet", "no such file, and no file matches it as a pattern"),
    ("empty_dir", "no Parquet files found in this directory"),
])
def test_parquet_sources_that_match_nothing(tmp_path, monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match=re.escape(f"{path}: {message}")):
        load_embeddings(path)
