"""Retrieval judgements (qrels) and lists of row ids, as BEIR, MTEB and TREC hold them.

Qrels are ``(query-id, corpus-id, relevance)`` triples, relevance a whole number ≥ 0
(0: judged not relevant). The format is read from the content, whatever the file's name:

- Parquet or Arrow IPC (their first bytes say so): columns ``query-id``, ``corpus-id``
  and ``score``, or ``qid``, ``docid`` and ``rel``;
- JSONL, when the first line that is not blank starts with ``{``: one object per line
  with those fields;
- BEIR TSV, when that line has three tab-separated fields: a header of three names
  (``query-id<TAB>corpus-id<TAB>score`` or any other), then one judgement per line. A
  first line whose third field is a number is a judgement, not a header;
- TREC, when it has four whitespace-separated fields: ``qid iteration docid rel``, no
  header; the iteration is ignored.

Text is UTF-8 (a leading byte-order mark is skipped); blank lines are skipped and the
fields of a text line stripped of surrounding spaces. Ids are text: an integer id 17 in
a table or a JSON line is ``"17"``. A path names its input as for embeddings (a file,
``-``, a named pipe, ``/dev/fd/N``; a table may also be a directory or a pattern), and
a stream is read once per process.

Every problem is one ``InputError`` line that starts with the file and, for one entry,
its line (``qrels.tsv:17:``) or, in a table, its row counted from 0
(``qrels.parquet: row 16:``).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from infonce_cli.errors import InputError, UsageError, arg

from .loading import load_id_array
from .sources import (
    _SIGNATURES,
    STDIN,
    TABLE_FORMATS,
    Format,
    Source,
    _os_problem,
    _read_stdin,
    _read_stream,
    _stat_input,
    first_line,
    input_sources,
    is_dataset,
    printable,
    printable_path,
    quoted,
)
from .tables import column_array, table_parts

if TYPE_CHECKING:  # pyarrow is imported where a table is read
    import pyarrow as pa

Array = np.ndarray[Any, Any]

DEFAULT_ID_COLUMNS = ("id", "_id", "query-id", "corpus-id")
"""Columns that hold the ids of a table's rows, in BEIR's, MTEB's and common layouts."""

_ROLES = (("query-id", "qid"), ("corpus-id", "docid"), ("score", "rel"))
"""The names of the three qrels fields: BEIR's and MTEB's, then TREC's."""
_BEIR_FIELDS = "3 tab-separated fields (query-id, corpus-id, score)"
_TREC_FIELDS = "4 whitespace-separated fields (qid, iteration, docid, rel)"
_RELEVANCE = "relevance must be a whole number ≥ 0"
_WHOLE = re.compile(r"\+?[0-9]+")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True, eq=False)
class Qrels:
    """Relevance judgements: one entry per judged (query, document) pair, in file order.

    ``query_ids``, ``doc_ids`` (J,) str; ``relevance`` (J,) int64 ≥ 0, 0 meaning judged
    not relevant; ``lines`` (J,) int64, where each entry is in the file: its line
    (from 1) in a text file, its row (from 0) in a table, as ``numbering`` says.
    ``source`` is the path as given.
    """

    query_ids: Array
    doc_ids: Array
    relevance: Array
    source: str
    lines: Array
    numbering: Literal["line", "row"] = "line"

    def __len__(self) -> int:
        return len(self.relevance)

    def where(self, entry: int) -> str:
        """Where entry ``entry`` is, as a message starts: ``qrels.tsv:17`` or
        ``qrels.parquet: row 16``."""
        return _at(printable_path(self.source), self.numbering, int(self.lines[entry]))


def load_qrels(path: str) -> Qrels:
    """Load qrels from BEIR TSV, TREC, JSONL, Parquet or Arrow IPC, told apart by content.

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "qrels.txt")
    ...     _ = path.write_text("q1 0 d7 2\\nq1 0 d3 0\\n\\nq2 0 17 1.0\\n")
    ...     qrels = load_qrels(str(path))
    >>> qrels.query_ids.tolist(), qrels.doc_ids.tolist(), qrels.relevance.tolist()
    (['q1', 'q1', 'q2'], ['d7', 'd3', '17'], [2, 0, 1])
    >>> qrels.lines.tolist(), qrels.where(2).endswith("qrels.txt:4")
    ([1, 2, 4], True)
    """
    opened = _open_input(path)
    name = printable_path(path)
    if isinstance(opened, bytes):
        query_ids, doc_ids, relevance, lines = _text_qrels(opened, name, path)
        numbering: Literal["line", "row"] = "line"
    elif opened[0].format in TABLE_FORMATS:
        query_ids, doc_ids, relevance, lines = _table_qrels(path, opened, name)
        numbering = "row"
    else:
        raise InputError(f"{name}: holds {opened[0].format} data, not qrels (BEIR TSV, TREC, "
                         "JSONL, Parquet or Arrow)")
    qrels = Qrels(query_ids, doc_ids, relevance, path, lines, numbering)
    _refuse_repeated_pairs(qrels)
    return qrels


def load_row_ids(path: str) -> Array:
    """The ids of an array's rows, one per row, as text: from a text file with one id per
    line (stripped of surrounding spaces; no empty lines) or an .npy array of integers or
    strings (N,). An id may appear only once.

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "ids.txt")
    ...     _ = path.write_text("doc-a\\n 17 \\r\\ndoc b\\n")
    ...     load_row_ids(str(path)).tolist()
    ['doc-a', '17', 'doc b']
    """
    opened = _open_input(path)
    name = printable_path(path)
    if isinstance(opened, bytes):
        ids, unit, first = _text_ids(opened, name, path), "line", 1
    elif len(opened) == 1 and opened[0].format is Format.NPY:
        ids, unit, first = _npy_ids(load_id_array(path), name), "row", 0
    else:
        kind = "a table" if is_dataset(path) else f"{opened[0].format} data"
        raise InputError(f"{name}: holds {kind}; ids must be a text file with one id per "
                         "line or an .npy array (the ids of a table are one of its columns)")
    repeat = _first_repeat(ids)
    if repeat is not None:
        earlier, later = (position + first for position in repeat)
        where = f"{name}:{later}" if unit == "line" else name
        raise InputError(f"{where}: id {quoted(ids[repeat[1]])} appears twice, at {unit}s "
                         f"{earlier} and {later}")
    return ids


def default_id_column(
    path: str, names: Sequence[str] = DEFAULT_ID_COLUMNS, *, argument: str = "id_col"
) -> str | None:
    """For a Parquet or Arrow input, the one column among ``names`` it has; None when it
    has none of them, and for inputs that are not tables. When it has two or more, a
    ``UsageError`` asks for one through the argument ``argument``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = str(Path(folder, "corpus.parquet"))
    ...     pq.write_table(pa.table({"_id": ["d1"], "embedding": [[0.5, 1.0]]}), path)
    ...     default_id_column(path)
    '_id'
    """
    opened = _open_input(path)
    if isinstance(opened, bytes) or opened[0].format not in TABLE_FORMATS:
        return None
    parts = table_parts(path, opened)
    found = [column for column in names if column in parts[0].schema.names]
    if len(found) <= 1:
        return found[0] if found else None
    listed = ", ".join(quoted(column) for column in found[:-1]) + f" and {quoted(found[-1])}"
    raise UsageError(f"{printable_path(path)}: has columns {listed}, each of which could hold "
                     f"the ids; choose one with {arg(argument)}")


# ---------------------------------------------------------------- reading an input


def _open_input(path: str) -> bytes | list[Source]:
    """The bytes of a text input, or the sources of a binary one (.npy, .npz, a table),
    as :func:`.sources.open_source` reads them but with text allowed."""
    if is_dataset(path):
        return input_sources(path)
    name = printable_path(path)
    if path == STDIN:
        return _detected(path, name, _read_stdin())
    status = _stat_input(path, name)
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise InputError(f"{name}: is a directory, expected a file")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return _detected(path, name, _read_stream(path, name, (status.st_dev, status.st_ino)))
    if not stat.S_ISREG(mode):
        what = "a character device" if stat.S_ISCHR(mode) else "not a regular file"
        raise InputError(f"{name}: is {what}, not a file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            kind = _format(head)
            return [Source(path, name, kind)] if kind is not None else head + handle.read()
    except OSError as exc:
        raise InputError(_os_problem(name, exc)) from None


def _format(head: bytes) -> Format | None:
    return next((kind for signature, kind in _SIGNATURES if head.startswith(signature)), None)


def _detected(path: str, name: str, data: memoryview) -> bytes | list[Source]:
    """A stream as the source of a binary input, or the bytes of a text one."""
    kind = _format(bytes(data[:8]))
    return bytes(data) if kind is None else [Source(path, name, kind, data)]


def _decoded(data: bytes, name: str) -> str:
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{name}:{line}: not UTF-8 text") from None


# ---------------------------------------------------------------- text qrels


def _text_qrels(data: bytes, name: str, path: str) -> tuple[Array, Array, Array, Array]:
    lines = _decoded(data, name).split("\n")
    start = next((index for index, line in enumerate(lines) if line.strip()), None)
    if start is None:
        empty = "input" if path == STDIN or not os.path.isfile(path) else "file"
        raise InputError(f"{name}: no judgements (empty {empty})")
    head = lines[start]
    parse: Callable[[str, str, int, dict[str, int]], tuple[str, str, int]]
    if head.lstrip().startswith("{"):
        parse = _json_entry
    elif len(head.split("\t")) == 3:
        parse = _beir_entry
        if not _is_number(head.split("\t")[2].strip()):
            start += 1  # the header
    elif len(head.split()) == 4:
        parse = _trec_entry
    else:
        raise InputError(f"{name}:{start + 1}: not a qrels line: expected {_BEIR_FIELDS} as "
                         f"in BEIR, {_TREC_FIELDS} as in TREC, or a JSON object, got "
                         f"{_count(len(head.split()), 'whitespace-separated field')}")
    query_ids, doc_ids, relevance, numbers = [], [], [], []
    grades: dict[str, int] = {}  # the few relevance texts a file holds, each read once
    for index in range(start, len(lines)):
        line = lines[index]
        if line and not line.isspace():
            query_id, doc_id, grade = parse(line, name, index + 1, grades)
            query_ids.append(query_id)
            doc_ids.append(doc_id)
            relevance.append(grade)
            numbers.append(index + 1)
    if not numbers:
        raise InputError(f"{name}: no judgements (only a header line)")
    return (np.array(query_ids, dtype=str), np.array(doc_ids, dtype=str),
            np.array(relevance, dtype=np.int64), np.array(numbers, dtype=np.int64))


def _beir_entry(line: str, name: str, number: int, grades: dict[str, int]
                ) -> tuple[str, str, int]:
    fields = line.split("\t")
    if len(fields) != 3:
        raise InputError(f"{name}:{number}: expected {_BEIR_FIELDS}, got {len(fields)}")
    query_id, doc_id, grade = fields[0].strip(), fields[1].strip(), fields[2].strip()
    if not query_id or not doc_id:
        role = "corpus-id" if query_id else "query-id"
        raise InputError(f"{name}:{number}: empty {role}")
    return query_id, doc_id, _text_relevance(grade, name, number, grades)


def _trec_entry(line: str, name: str, number: int, grades: dict[str, int]
                ) -> tuple[str, str, int]:
    fields = line.split()
    if len(fields) != 4:
        raise InputError(f"{name}:{number}: expected {_TREC_FIELDS}, got {len(fields)}")
    return fields[0], fields[2], _text_relevance(fields[3], name, number, grades)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _whole_number(text: str) -> int | None:
    """A relevance written as text, or None when it is not a whole number ≥ 0 that fits
    in 64 bits (``2``, ``+2``, ``2.0`` and ``2e0`` are 2; ``1_0``, which Python would read
    as 10, is not a number).

    >>> _whole_number("2e0"), _whole_number("1_0")
    (2, None)
    """
    if _WHOLE.fullmatch(text):
        value = int(text)
    elif text.isascii() and "_" not in text and _is_number(text):
        number = float(text)
        if not (math.isfinite(number) and number.is_integer() and number >= 0):
            return None
        value = int(number)
    else:
        return None
    return value if value <= _INT64_MAX else None


def _text_relevance(text: str, name: str, number: int, grades: dict[str, int]) -> int:
    value = grades.get(text)
    if value is None:
        value = _whole_number(text)
        if value is None:
            raise InputError(f"{name}:{number}: {_RELEVANCE}, got {quoted(text)}")
        grades[text] = value
    return value


def _json_entry(line: str, name: str, number: int, grades: dict[str, int]
                ) -> tuple[str, str, int]:
    where = f"{name}:{number}"
    try:
        entry = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{where}: not a JSON object ({first_line(exc)})") from None
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a JSON object, got {_json(entry)[:40]}")
    query_id, doc_id, relevance = (_json_field(entry, names, where) for names in _ROLES)
    return (_json_id(query_id, "query-id", where), _json_id(doc_id, "corpus-id", where),
            _json_relevance(relevance, where))


def _json_field(entry: dict[str, Any], names: tuple[str, str], where: str) -> Any:
    found = [name for name in names if name in entry]
    if len(found) == 1:
        return entry[found[0]]
    if not found:
        raise InputError(f'{where}: no field "{names[0]}" (or "{names[1]}")')
    raise InputError(f'{where}: both "{names[0]}" and "{names[1]}" are given; keep one')


def _json_id(value: Any, role: str, where: str) -> str:
    if isinstance(value, str):
        if not value:
            raise InputError(f"{where}: empty {role}")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{where}: {role} must be a string or an integer, got {_json(value)}")


def _json_relevance(value: Any, where: str) -> int:
    if isinstance(value, bool):
        whole = None
    elif isinstance(value, int):
        whole = value if 0 <= value <= _INT64_MAX else None
    elif isinstance(value, float | str):
        whole = _whole_number(str(value).strip())
    else:
        whole = None
    if whole is None:
        raise InputError(f"{where}: {_RELEVANCE}, got {_json(value)}")
    return whole


def _json(value: Any) -> str:
    return printable(json.dumps(value, ensure_ascii=False))


# ---------------------------------------------------------------- table qrels


def _table_qrels(path: str, sources: list[Source], name: str
                 ) -> tuple[Array, Array, Array, Array]:
    parts = table_parts(path, sources)
    schema = parts[0].schema
    columns = [_role_column(schema.names, names, name) for names in _ROLES]
    query_column, doc_column, relevance_column = columns
    query_ids = _table_ids(column_array(parts, query_column, name), name, query_column,
                           "query-id")
    doc_ids = _table_ids(column_array(parts, doc_column, name), name, doc_column, "corpus-id")
    relevance = _table_relevance(column_array(parts, relevance_column, name), name,
                                 relevance_column)
    if not len(relevance):
        raise InputError(f"{name}: no judgements (no rows)")
    return query_ids, doc_ids, relevance, np.arange(len(relevance), dtype=np.int64)


def _role_column(columns: list[str], names: tuple[str, str], name: str) -> str:
    found = [column for column in names if column in columns]
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f'{name}: has both columns "{names[0]}" and "{names[1]}"; keep one')
    listed = ", ".join(printable(column) for column in columns) or "none"
    raise InputError(f'{name}: no column "{names[0]}" (or "{names[1]}"); columns: {listed}')


def _table_ids(array: pa.Array, name: str, column: str, role: str) -> Array:
    import pyarrow as pa

    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_integer(kind)):
        raise InputError(f"{name}: column {quoted(column)} must hold strings or integers, "
                         f"got {printable(str(kind))}")
    if array.null_count:
        raise InputError(f"{_at(name, 'row', _first_null(array))}: null {role}")
    ids = np.asarray(array.to_numpy(zero_copy_only=False)).astype(str)
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise InputError(f"{_at(name, 'row', int(empty[0]))}: empty {role}")
    return ids


def _table_relevance(array: pa.Array, name: str, column: str) -> Array:
    import pyarrow as pa

    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise InputError(f"{name}: column {quoted(column)} must hold whole numbers ≥ 0, got "
                         f"{printable(str(kind))}")
    if array.null_count:
        raise InputError(f"{_at(name, 'row', _first_null(array))}: {_RELEVANCE}, got null")
    values = np.asarray(array.to_numpy(zero_copy_only=False))
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            good = np.isfinite(values) & (values >= 0) & (values == np.floor(values)) & (
                values < 2.0**63)
    else:
        good = (values >= 0) & (values <= _INT64_MAX)
    bad = np.flatnonzero(~good)
    if bad.size:
        value = values[bad[0]].item()
        raise InputError(f"{_at(name, 'row', int(bad[0]))}: {_RELEVANCE}, got {value}")
    return values.astype(np.int64)


def _first_null(array: pa.Array) -> int:
    return int(np.argmax(np.asarray(array.is_null().to_numpy(zero_copy_only=False))))


# ---------------------------------------------------------------- id lists


def _text_ids(data: bytes, name: str, path: str) -> Array:
    lines = _decoded(data, name).split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        empty = "input" if path == STDIN or not os.path.isfile(path) else "file"
        raise InputError(f"{name}: no ids (empty {empty})")
    ids = [line.strip() for line in lines]
    if not all(ids):
        number = ids.index("") + 1
        raise InputError(f"{name}:{number}: empty line; every line holds one id")
    return np.array(ids, dtype=str)


def _npy_ids(values: Array, name: str) -> Array:
    if values.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of ids (N,), got shape "
                         f"{tuple(values.shape)}")
    if not len(values):
        raise InputError(f"{name}: no ids (an empty array)")
    if values.dtype.kind == "S":
        try:
            values = np.char.decode(values, "utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name}: ids are bytes that are not UTF-8 text") from None
    ids = values.astype(str)
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise InputError(f"{name}: row {int(empty[0])}: empty id")
    return ids


# ---------------------------------------------------------------- repeats


def _first_repeat(*keys: Array) -> tuple[int, int] | None:
    """The positions of the first entry whose keys repeat an earlier entry's, and of that
    earlier entry; None when every entry is distinct.

    >>> _first_repeat(np.array(["a", "b", "c", "b", "a"]))
    (1, 3)
    """
    # A stable sort keeps equal keys in file order: for the repeat that comes first, the
    # entry before it in its group is the group's first.
    order = np.lexsort(keys[::-1])
    same = np.ones(len(order) - 1, dtype=bool)
    for key in keys:
        ordered = key[order]
        same &= ordered[1:] == ordered[:-1]
    if not same.any():
        return None
    later, earlier = order[1:][same], order[:-1][same]
    first = int(np.argmin(later))
    return int(earlier[first]), int(later[first])


def _refuse_repeated_pairs(qrels: Qrels) -> None:
    pairs = set(zip(qrels.query_ids.tolist(), qrels.doc_ids.tolist(), strict=True))
    # Counting is faster than sorting; the sort finds the first repeat when there is one.
    repeat = None if len(pairs) == len(qrels) else _first_repeat(qrels.query_ids,
                                                                   qrels.doc_ids)
    if repeat is None:
        return
    earlier, later = repeat
    raise InputError(f"{qrels.where(later)}: query {quoted(qrels.query_ids[later])}, "
                     f"document {quoted(qrels.doc_ids[later])} judged twice, at "
                     f"{qrels.numbering}s {int(qrels.lines[earlier])} and "
                     f"{int(qrels.lines[later])}")


# ---------------------------------------------------------------- messages


def _at(name: str, unit: str, number: int) -> str:
    return f"{name}:{number}" if unit == "line" else f"{name}: row {number}"


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
