"""Load labelled texts from files (CSV, TSV, JSON Lines, Parquet) or a Hugging Face dataset.

Every problem is a :class:`~niche.errors.DataValidationError` whose one-line message names the
file, the 1-based physical line and the column. Loading only reads: nothing is written.

    >>> from niche.data import load_file
    >>> rows = load_file("banking77/train.csv", label_col="category")  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from niche.data.rows import Rows
from niche.errors import ConfigurationError, DatasetNotFoundError, DataValidationError

__all__ = ["FORMATS", "load_file", "load_hf", "read_jsonl"]

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def load_file(
    path: str | Path,
    *,
    text_col: str | int = "text",
    label_col: str | int = "label",
    format: str | None = None,
    header: bool = True,
) -> Rows:
    """Read a labelled text file into :class:`~niche.data.Rows`.

    The format comes from the suffix (``.csv``; ``.tsv``/``.tab``; ``.jsonl``/``.json``/
    ``.ndjson`` as JSON Lines; ``.parquet``) or from ``format=``. The file must be UTF-8 (a
    BOM is accepted). CSV follows RFC 4180 quoting; TSV has no quoting at all (a tab
    separates fields, a newline ends a row), as in the IANA definition. ``header=False``
    (CSV/TSV only) names columns by their 0-based index: ``text_col=1, label_col=0``.
    Labels are stripped strings; integer labels become ``str(label)``. Blank lines are
    skipped.

        >>> rows = load_file("sms.tsv", header=False, text_col=1, label_col=0)  # doctest: +SKIP

    Raises :class:`~niche.errors.DataValidationError` (file, line, column) for a missing
    column, a column the header names twice, an empty text or label, broken quoting, bytes
    that are not UTF-8, a row with the wrong number of fields, malformed JSON and a file
    without rows;
    :class:`~niche.errors.DatasetNotFoundError` when ``path`` does not exist.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if not header and fmt not in ("csv", "tsv"):
        raise ConfigurationError(f"header=False applies to csv and tsv files, not {fmt}")
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    text_name, label_name = str(text_col), str(label_col)
    if text_name == label_name:
        raise ConfigurationError(f"the text and the label column are both {text_name!r}")
    if fmt == "parquet":
        return _load_parquet(path, text_name, label_name)
    if fmt == "jsonl":
        return _parse_jsonl(path, _decode(path), text_col=text_name, label_col=label_name)
    try:
        return _load_delimited(path, fmt, text_name, label_name, header)
    except UnicodeDecodeError:
        _decode(path)  # raises, naming the line of the first bad byte
        raise


def load_hf(
    dataset: Any,
    *,
    text_col: str = "text",
    label_col: str = "label",
    source: str | None = None,
) -> Rows:
    """Turn one split of a Hugging Face ``datasets.Dataset`` into :class:`~niche.data.Rows`.

    ``ClassLabel`` label features map to their names; other integer labels become strings.
    Errors name ``source`` (default ``<datasets.Dataset>``), line = row index + 1, and the
    column.

        >>> rows = load_hf(datasets.load_dataset("banking77", split="train"))  # doctest: +SKIP
    """
    where = source if source is not None else "<datasets.Dataset>"
    columns = getattr(dataset, "column_names", None)
    if not isinstance(columns, list):
        # A DatasetDict has a dict of column lists: ask for one split.
        hint = " (pass one split, e.g. dataset['train'])" if isinstance(columns, dict) else ""
        raise DataValidationError(
            f"expected a datasets.Dataset, got {type(dataset).__name__}{hint}", path=where
        )
    for column in (text_col, label_col):
        if column not in columns:
            raise DataValidationError(
                f"missing column; the dataset has columns {_names(columns)}",
                path=where,
                column=column,
            )
    if len(dataset) == 0:
        raise DataValidationError("the dataset has no rows", path=where)
    texts = list(dataset[text_col])
    labels: list[object] = list(dataset[label_col])
    feature = dataset.features[label_col]
    names = getattr(feature, "names", None)
    if isinstance(names, list) and hasattr(feature, "int2str"):
        labels = [_class_name(value, names, where, i, label_col) for i, value in enumerate(labels)]
    return Rows.from_columns(texts, labels, source=where, text_col=text_col, label_col=label_col)


def read_jsonl(
    path: str | Path, *, text_col: str = "text", label_col: str = "label", allow_empty: bool = False
) -> Rows:
    """Like ``load_file(path, format="jsonl")``; ``allow_empty`` accepts a file without rows.

    Used to read saved splits, which may legitimately be empty.

        >>> rows = read_jsonl("version/test.jsonl", allow_empty=True)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    return _parse_jsonl(
        path, _decode(path), text_col=text_col, label_col=label_col, allow_empty=allow_empty
    )


def _parse_jsonl(
    path: Path, text: str, *, text_col: str, label_col: str, allow_empty: bool = False
) -> Rows:
    texts: list[object] = []
    labels: list[object] = []
    lines: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise DataValidationError(_json_problem(line, path), path=path, line=number) from None
        if not isinstance(record, dict):
            raise DataValidationError(
                f"expected a JSON object, found {_json_type(record)}", path=path, line=number
            )
        for column in (text_col, label_col):
            if column not in record:
                raise DataValidationError(
                    f"missing key; this line has keys {_names(list(record))}",
                    path=path,
                    line=number,
                    column=column,
                )
        texts.append(record[text_col])
        labels.append(record[label_col])
        lines.append(number)
    if not lines and not allow_empty:
        raise DataValidationError("no rows: the file is empty", path=path)
    return Rows.from_columns(
        texts, labels, source=str(path), lines=lines, text_col=text_col, label_col=label_col
    )


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt == "json":
            fmt = "jsonl"
        if fmt not in FORMATS:
            raise ConfigurationError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        return fmt
    fmt_of_suffix = _SUFFIXES.get(path.suffix.lower())
    if fmt_of_suffix is None:
        raise DataValidationError(
            f"cannot tell the format from the suffix {path.suffix!r}; pass format= one of "
            f"{', '.join(FORMATS)}",
            path=path,
        )
    return fmt_of_suffix


def _decode(path: Path) -> str:
    data = path.read_bytes()
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        position = exc.start + offset
        line = data.count(b"\n", 0, position) + 1
        byte_column = position - (data.rfind(b"\n", 0, position) + 1) + 1
        raise DataValidationError(
            f"byte 0x{data[position]:02X} at byte column {byte_column} is not valid UTF-8; "
            "re-save the file as UTF-8",
            path=path,
            line=line,
        ) from None


def _load_delimited(path: Path, fmt: str, text_col: str, label_col: str, header: bool) -> Rows:
    # Streamed, not read whole: a large file costs its rows, not three copies of its text.
    with path.open(encoding="utf-8-sig", newline="") as stream:
        if fmt == "csv":
            reader = csv.reader(stream, strict=True)
        else:
            reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
        return _read_delimited(path, reader, text_col, label_col, header)


def _read_delimited(path: Path, reader: Any, text_col: str, label_col: str, header: bool) -> Rows:
    # Filled once the header is read, so a quoting error can name its column.
    columns: list[str] = []
    records = _records(reader, path, columns)
    first = next(records, None)
    if first is None:
        raise DataValidationError("no rows: the file is empty", path=path)
    start, _end, record = first
    header_line = start
    if header:
        columns.extend(record)
    else:
        columns.extend(str(i) for i in range(len(record)))
        records = _chain_first(first, records)
    positions = {}
    for column in (text_col, label_col):
        if column not in columns:
            what = "the header has columns" if header else "rows have columns"
            raise DataValidationError(
                f"missing column; {what} {_names(columns)}",
                path=path,
                line=header_line,
                column=column,
            )
        if columns.count(column) > 1:
            where = [str(i + 1) for i, name in enumerate(columns) if name == column]
            raise DataValidationError(
                f"the header names this column {len(where)} times (fields {', '.join(where)}); "
                "rename or drop the extra ones",
                path=path,
                line=header_line,
                column=column,
            )
        positions[column] = columns.index(column)
    width = len(columns)
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    for start, end, record in records:
        if len(record) != width:
            problem = f"expected {width} fields, found {len(record)}"
            if end > start:
                problem += f" in a record spanning lines {start}-{end} (an unclosed quote?)"
            missing = columns[len(record)] if len(record) < width else None
            raise DataValidationError(problem, path=path, line=start, column=missing)
        texts.append(record[positions[text_col]])
        # Interned: a label repeats on every row of its class.
        labels.append(sys.intern(record[positions[label_col]]))
        lines.append(start)
    if not lines:
        raise DataValidationError("no rows after the header", path=path)
    return Rows.from_columns(
        texts, labels, source=str(path), lines=lines, text_col=text_col, label_col=label_col
    )


def _records(reader: Any, path: Path, columns: list[str]) -> Iterator[tuple[int, int, list[str]]]:
    """Yield (first line, last line, fields) of each non-blank record."""
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = f"malformed record starting on this line: {exc}"
            line = _physical_line(path, start)
            field = _quoted_field(line, reader.dialect.delimiter)
            column = None
            if field is not None:
                problem += " (broken quoting: an unclosed quote, or text after a closing quote)"
                column = columns[field] if field < len(columns) else str(field)
            raise DataValidationError(problem, path=path, line=start, column=column) from None
        if record:
            yield start, reader.line_num, record


def _physical_line(path: Path, number: int) -> str:
    """Line ``number`` (1-based) of ``path``, read again for an error message."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as stream:
        for current, line in enumerate(stream, start=1):
            if current == number:
                return line.rstrip("\r\n")
    return ""


def _quoted_field(line: str, delimiter: str) -> int | None:
    """Index of the field holding the last quote opened on ``line`` (None: no quote)."""
    field, in_quotes, opened, i = 0, False, None, 0
    while i < len(line):
        char = line[i]
        if in_quotes:
            if char == '"':
                if line[i + 1 : i + 2] == '"':
                    i += 1  # an escaped quote inside a quoted field
                else:
                    in_quotes = False
        elif char == '"':
            in_quotes, opened = True, field
        elif char == delimiter:
            field += 1
        i += 1
    return opened


def _chain_first(
    first: tuple[int, int, list[str]], rest: Iterator[tuple[int, int, list[str]]]
) -> Iterator[tuple[int, int, list[str]]]:
    yield first
    yield from rest


def _load_parquet(path: Path, text_col: str, label_col: str) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataValidationError(f"not a readable Parquet file ({exc})", path=path) from None
    for column in (text_col, label_col):
        if column not in table.column_names:
            raise DataValidationError(
                f"missing column; the file has columns {_names(table.column_names)}",
                path=path,
                line=1,
                column=column,
            )
        if table.column_names.count(column) > 1:
            raise DataValidationError(
                f"the file has {table.column_names.count(column)} columns of this name",
                path=path,
                line=1,
                column=column,
            )
    if table.num_rows == 0:
        raise DataValidationError("no rows: the file is empty", path=path)
    return Rows.from_columns(
        table.column(text_col).to_pylist(),
        table.column(label_col).to_pylist(),
        source=str(path),
        text_col=text_col,
        label_col=label_col,
    )


def _class_name(value: object, names: list[str], source: str, index: int, column: str) -> object:
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    if value is None or value == -1:
        # -1 is how datasets marks an unlabelled row.
        return None
    raise DataValidationError(
        f"class index {value!r} is outside the {len(names)} ClassLabel names",
        path=source,
        line=index + 1,
        column=column,
    )


def _json_problem(line: str, path: Path) -> str:
    try:
        json.loads(line)
    except json.JSONDecodeError as exc:
        problem = f"malformed JSON: {exc.msg} at character {exc.colno}"
    else:  # orjson is stricter (e.g. NaN); keep its verdict.
        problem = "malformed JSON"
    if path.suffix.lower() == ".json":
        problem += " (niche reads .json files as JSON Lines: one object per line)"
    return problem


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _names(columns: list[str]) -> str:
    return ", ".join(repr(c) for c in columns) if columns else "(none)"
