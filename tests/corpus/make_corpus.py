"""Build the corpus of broken and hostile inputs the CLI must refuse cleanly.

    python tests/corpus/make_corpus.py DIR     # write the files and list the cases

Each case is a command line against files written into DIR, the exit code DESIGN §4
prescribes, and the file name the one-line error must mention. Nothing here is a
hand-made binary: every file is produced by the code below.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

N, D = 12, 8
PWNED = "pwned.txt"
"""The file a malicious pickle would create if it were ever loaded."""


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    exit_code: int
    mentions: str
    outputs: tuple[str, ...] = field(default_factory=tuple)
    needs_non_root: bool = False


class _CreatesFile:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.system, (f"touch {PWNED}",))


def _npy_with_header(path: Path, header: str, payload: bytes = b"") -> None:
    text = header.encode("latin1")
    padding = 64 - (10 + len(text) + 1) % 64
    text += b" " * padding + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload)


def _list_column(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[-1])


def build(root: Path) -> list[Case]:
    rng = np.random.default_rng(0)
    good = rng.normal(size=(N, D)).astype(np.float32)
    np.save(root / "q.npy", good)
    np.save(root / "p.npy", good + 0.1)
    np.save(root / "neg.npy", rng.normal(size=(N, 3, D)).astype(np.float32))

    def save(name: str, array: np.ndarray, **kwargs: object) -> str:
        np.save(root / name, array, **kwargs)  # type: ignore[arg-type]
        return name

    cases: list[Case] = []

    def bad_query(name: str, mentions: str | None = None, code: int = 1) -> None:
        cases.append(Case(name, ("-q", name, "-p", "p.npy"), code, mentions or name))

    # ---- .npy files
    data = (root / "q.npy").read_bytes()
    (root / "truncated.npy").write_bytes(data[:-17])
    bad_query("truncated.npy")
    (root / "bad_magic.npy").write_bytes(b"\x93NUMPZ" + data[6:])
    bad_query("bad_magic.npy")
    _npy_with_header(root / "absurd_shape.npy",
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000000, 4096), }",
                     b"\x00" * 64)
    bad_query("absurd_shape.npy")
    _npy_with_header(root / "negative_shape.npy",
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (-5, 8), }")
    bad_query("negative_shape.npy")
    _npy_with_header(root / "negative_sizes.npy",
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (-7, -5), }",
                     b"\x00" * 140)
    bad_query("negative_sizes.npy", "a negative size in shape (-7, -5)")
    _npy_with_header(root / "code_in_header.npy", "__import__('os').system('touch pwned.txt')")
    bad_query("code_in_header.npy")
    (root / "magic_only.npy").write_bytes(b"\x93NUMPY\x01\x00")
    bad_query("magic_only.npy")
    (root / "empty_file.npy").write_bytes(b"")
    bad_query("empty_file.npy")
    bad_query(save("pickled.npy", np.array([_CreatesFile()], dtype=object), allow_pickle=True))
    bad_query(save("objects_2d.npy", np.array([[1.0, None]] * N, dtype=object),
                   allow_pickle=True))
    bad_query(save("ints.npy", np.ones((N, D), dtype=np.int64)))
    bad_query(save("bools.npy", np.ones((N, D), dtype=bool)))
    bad_query(save("complex.npy", np.ones((N, D), dtype=np.complex64)))
    bad_query(save("strings.npy", np.array([["a"] * D] * N)))
    bad_query(save("scalar.npy", np.float32(1.0)))
    bad_query(save("vector.npy", np.ones(D, dtype=np.float32)))
    bad_query(save("four_d.npy", np.ones((N, 2, 2, D), dtype=np.float32)))
    bad_query(save("zero_rows.npy", np.ones((0, D), dtype=np.float32)))
    bad_query(save("zero_dims.npy", np.ones((N, 0), dtype=np.float32)))
    nan = good.copy()
    nan[[3, 7]] = np.nan
    bad_query(save("nan_rows.npy", nan))
    inf = good.copy()
    inf[5, 2] = np.inf
    bad_query(save("inf_rows.npy", inf))
    zero = good.copy()
    zero[4] = 0
    bad_query(save("zero_norm_rows.npy", zero))
    cases.append(Case("paired negatives with NaN", ("-q", "q.npy", "-p", "p.npy", "--neg",
                                                    save("nan_neg.npy", np.full((N, 3, D),
                                                                                np.nan, "f4"))),
                      1, "nan_neg.npy"))
    cases.append(Case("4-D negatives", ("-q", "q.npy", "-p", "p.npy", "--neg",
                                        save("neg4d.npy", np.ones((N, 2, 2, D), "f4"))),
                      1, "neg4d.npy"))

    # ---- .npz files
    np.savez(root / "many.npz", a=good, b=good)
    bad_query("many.npz")
    np.savez(root / "none.npz")
    bad_query("none.npz")
    np.savez(root / "pickled.npz", x=np.array([_CreatesFile()], dtype=object))
    bad_query("pickled.npz")
    cases.append(Case("npz key missing", ("-q", "many.npz", "--query-key", "zz", "-p", "p.npy"),
                      1, "many.npz"))
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    bad_query("corrupt.npz")
    with zipfile.ZipFile(root / "pickle_inside.npz", "w") as archive:
        archive.writestr("x.npy", pickle.dumps(_CreatesFile()))
    bad_query("pickle_inside.npz")

    # ---- Parquet files
    def parquet(name: str, table: pa.Table, **kwargs: object) -> str:
        pq.write_table(table, root / name, **kwargs)  # type: ignore[arg-type]
        return name

    bad_query(parquet("null_rows.parquet", pa.table({"v": pa.array([[1.0, 2.0], None])})))
    bad_query(parquet("null_values.parquet", pa.table({"v": pa.array([[1.0, None]])})))
    bad_query(parquet("ragged.parquet", pa.table({"v": pa.array([[1.0, 2.0], [1.0]])})))
    bad_query(parquet("strings.parquet", pa.table({"v": pa.array([["a", "b"], ["c", "d"]])})))
    bad_query(parquet("too_deep.parquet", pa.table({"v": pa.array([[[1.0, 2.0]], [[3.0, 4.0]]])})))
    bad_query(parquet("no_list_column.parquet", pa.table({"v": pa.array([1.0, 2.0])})))
    bad_query(parquet("ambiguous.parquet", pa.table({"a": _list_column(good),
                                                     "b": _list_column(good)})))
    cases.append(Case("missing column", ("-q", parquet("one.parquet",
                                                       pa.table({"v": _list_column(good)})),
                                         "--query-col", "nope", "-p", "p.npy"),
                      1, "one.parquet"))
    empty = pa.table({"v": pa.array([], type=pa.list_(pa.float32()))})
    bad_query(parquet("zero_row_groups.parquet", empty))
    (root / "not_parquet.parquet").write_bytes(b"PAR1 certainly not parquet PAR1")
    bad_query("not_parquet.parquet")
    bad_query(parquet("int_lists.parquet", pa.table({"v": pa.array([[1, 2], [3, 4]])})))

    # ---- paths
    (root / "a_directory").mkdir()
    bad_query("a_directory")
    bad_query("does_not_exist.npy")
    (root / "notes.txt").write_text("1 2 3\n")
    bad_query("notes.txt")
    unreadable = save("unreadable.npy", good)
    (root / unreadable).chmod(0)
    cases.append(Case("unreadable.npy", ("-q", unreadable, "-p", "p.npy"), 1, unreadable,
                      needs_non_root=True))

    # ---- Arrow IPC and formats read from the first bytes
    def arrow(name: str, table: pa.Table, stream: bool = False) -> str:
        with pa.OSFile(str(root / name), "wb") as sink:
            opened = pa.ipc.new_stream if stream else pa.ipc.new_file
            with opened(sink, table.schema) as writer:
                writer.write_table(table)
        return name

    vectors = pa.table({"v": _list_column(good)})
    arrow_bytes = (root / arrow("good.arrow", vectors)).read_bytes()
    (root / "truncated.arrow").write_bytes(arrow_bytes[:len(arrow_bytes) // 2])
    bad_query("truncated.arrow")
    (root / "garbage.arrow").write_bytes(b"ARROW1\x00\x00" + b"\x07" * 64)
    bad_query("garbage.arrow")
    bad_query(arrow("int_lists.arrows", pa.table({"v": pa.array([[1, 2], [3, 4]])}),
                    stream=True))
    stream_bytes = (root / arrow("good.arrows", vectors, stream=True)).read_bytes()
    (root / "truncated.arrows").write_bytes(stream_bytes[:len(stream_bytes) // 2])
    bad_query("truncated.arrows")
    bad_query(parquet("parquet_named.npy", pa.table({"v": pa.array([["a", "b"], ["c", "d"]])})))
    with open(root / "npy_named.parquet", "wb") as handle:
        np.save(handle, np.ones((N, D), dtype=np.int64))
    bad_query("npy_named.parquet", "npy_named.parquet: expected a float array")

    # ---- names: devices, links, control characters, patterns
    for device in ("/dev/zero", "/dev/urandom"):
        if os.path.exists(device):
            bad_query(device, f"{device}: is a character device")
    os.symlink("/dev/zero", root / "zero.npy")
    bad_query("zero.npy", "zero.npy: is a character device")
    os.symlink("loop_b.npy", root / "loop_a.npy")
    os.symlink("loop_a.npy", root / "loop_b.npy")
    bad_query("loop_a.npy", "loop_a.npy: symbolic link loop")
    os.symlink("gone.npy", root / "dangling.npy")
    bad_query("dangling.npy", "dangling.npy: no such file")
    integers = np.ones((N, D), dtype=np.int64)
    bad_query(save("new\nline.npy", integers), "new\\nline.npy: expected")
    bad_query(save("esc\x1b[31m.npy", integers), "esc\\x1b[31m.npy: expected")
    bad_query("q.npy/x.npy", "q.npy/x.npy: a part of the path is not a directory")
    cases.append(Case("a name too long", ("-q", "x" * 300 + ".npy", "-p", "p.npy"), 1,
                      "file name too long"))
    # A name that exists is that file, never a pattern, even beside the file it would match.
    np.save(root / "q1.npy", good)
    bad_query(save("q[1].npy", integers), "q[1].npy: expected")
    parquet("b1.parquet", vectors)
    bad_query(parquet("b[1].parquet", pa.table({"v": pa.array([[1, 2]] * N)})), "b[1].parquet")
    bad_query("nothing-*.parquet", "nothing-*.parquet: no such file, and no file matches it")
    cases.append(Case("a pattern matching .npy files",
                      ("-q", save("glob_of_npy1.npy", good)[:-5] + "*.npy", "-p", "p.npy"), 1,
                      "glob_of_npy1.npy: holds .npy data"))
    cases.append(Case("empty stdin", ("-q", "-", "-p", "p.npy"), 1, "<stdin>: empty input"))

    # ---- inconsistent inputs
    cases.append(Case("N mismatch", ("-q", "q.npy", "-p", save("short.npy", good[:-1])), 1,
                      "short.npy"))
    cases.append(Case("d mismatch", ("-q", "q.npy", "-p", save("narrow.npy", good[:, :-1])), 1,
                      "narrow.npy"))
    cases.append(Case("paired N mismatch", ("-q", "q.npy", "-p", "p.npy", "--neg",
                                            save("neg_short.npy",
                                                 np.ones((N - 2, 3, D), "f4"))), 1,
                      "neg_short.npy"))
    cases.append(Case("shared d mismatch", ("-q", "q.npy", "-p", "p.npy", "--neg",
                                            save("neg_narrow.npy", np.ones((5, D + 1), "f4"))),
                      1, "neg_narrow.npy"))

    # ---- outputs
    base = ("-q", "q.npy", "-p", "p.npy")
    cases += [
        Case("output is an input", (*base, "--output", "q.npy"), 2, "q.npy"),
        Case("per-sample is an input", (*base, "--per-sample", "p.npy"), 2, "p.npy"),
        Case("output in a missing directory", (*base, "--output", "missing/out.json"), 1,
             "missing/out.json"),
        Case("per-sample in a missing directory", (*base, "--per-sample", "missing/r.csv"), 1,
             "missing/r.csv", outputs=("missing",)),
        Case("output onto an id file", (*base, "--pos-ids", save("ids.npy", np.arange(N)),
                                        "--output", "ids.npy"), 2, "--output ids.npy"),
        Case("two outputs naming one file", (*base, "--output", "s.jsonl", "--per-sample",
                                             "s.jsonl"), 2, "name the same file s.jsonl"),
        Case("two outputs naming one file twice", (*base, "--output", "t.jsonl",
                                                   "--per-sample", "./t.jsonl"), 2,
             "name the same file t.jsonl"),
        Case("output linked to an input", (*base, "--output", "out_link.json"), 2,
             "out_link.json is also an input file (q.npy)"),
        Case("output is a directory", (*base, "--output", "a_directory"), 1,
             "a_directory: is a directory"),
        Case("output is a symbolic link loop", (*base, "--output", "loop_a.npy"), 1,
             "loop_a.npy: symbolic link loop"),
        Case("per-sample would join the input pattern",
             ("-q", "qparts-*.parquet", "-p", "p.npy", "--per-sample", "qparts-9.parquet"), 2,
             "qparts-9.parquet matches the input pattern"),
        # A named pipe or /dev/null is a fine output: the bad input is what is refused,
        # and the pipe stays a pipe.
        Case("bad input, output to a named pipe", ("-q", "ints.npy", "-p", "p.npy", "--output",
                                                   "out.pipe"), 1, "ints.npy"),
        Case("bad input, output to /dev/null", ("-q", "ints.npy", "-p", "p.npy", "--output",
                                                "/dev/null"), 1, "ints.npy"),
    ]
    os.symlink("q.npy", root / "out_link.json")
    parquet("qparts-1.parquet", vectors)
    os.mkfifo(root / "out.pipe")
    if os.path.exists("/dev/full"):
        cases.append(Case("output onto a full device", (*base, "--output", "/dev/full"), 1,
                          "/dev/full: cannot write (No space left on device)"))
    return cases


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    target.mkdir(parents=True, exist_ok=True)
    for case in build(target):
        print(f"{case.exit_code}  {case.name:35s} infonce score {' '.join(case.args)}")
