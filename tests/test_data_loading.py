"""niche.data loading: real files written into tmp_path, exact line and column in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from niche.data import Rows, load_file, load_hf
from niche.errors import ConfigurationError, DatasetNotFoundError, DataValidationError


def _write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
    }


def test_csv_with_quoted_commas_and_newlines_keeps_each_rows_start_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "data.csv",
        'text,label\n"hello, world",greet\n\n"two\nlines",multi\nplain,other\n',
    )
    rows = load_file(path)
    assert rows.texts == ("hello, world", "two\nlines", "plain")
    assert rows.labels == ("greet", "multi", "other")
    assert rows.lines == (2, 4, 6)
    assert rows.source == str(path)
    assert len(rows) == 3
    assert rows.label_set() == ["greet", "multi", "other"]


def test_a_utf8_bom_and_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "bom.csv", b"\xef\xbb\xbftext,label\r\ncaf\xc3\xa9,x\r\n")
    rows = load_file(path)
    assert rows.texts == ("café",)
    assert rows.labels == ("x",)


def test_tsv_without_header_names_columns_by_index_and_has_no_quoting(tmp_path: Path) -> None:
    path = _write(tmp_path, "sms.tsv", 'ham\t"Quoted" start and "more\nspam\tWIN "cash" now\n')
    rows = load_file(path, header=False, text_col=1, label_col=0)
    assert rows.texts == ('"Quoted" start and "more', 'WIN "cash" now')
    assert rows.labels == ("ham", "spam")
    assert load_file(path, header=False, text_col="1", label_col="0") == rows


def test_jsonl_converts_integer_labels_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "data.jsonl",
        '{"text": "first", "label": 3}\n\n{"text": "second", "label": " four ", "extra": 1}\n',
    )
    rows = load_file(path)
    assert rows.texts == ("first", "second")
    assert rows.labels == ("3", "four")
    assert rows.lines == (1, 3)


def test_parquet_and_format_override(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.bin"
    pq.write_table(pa.table({"body": ["a text", "another"], "y": [0, 1]}), path)
    rows = load_file(path, format="parquet", text_col="body", label_col="y")
    assert rows == Rows(("a text", "another"), ("0", "1"), str(path), (1, 2))


@pytest.mark.parametrize(
    ("name", "content", "line", "column", "problem"),
    [
        pytest.param(
            "data.csv",
            "text,category\nhello,x\n",
            1,
            "label",
            "missing column; the header has columns 'text', 'category'",
            id="missing-column",
        ),
        pytest.param(
            "data.csv", "text,label\na,x\n\nb,\n", 4, "label", "empty label", id="empty-label"
        ),
        pytest.param(
            "data.csv", "text,label\na,x\n  \t ,y\n", 3, "text", "empty text", id="blank-text"
        ),
        pytest.param(
            "data.csv",
            "text,label\na,x\n\u200b\u200b,y\n",
            3,
            "text",
            "invisible or control characters",
            id="invisible-text",
        ),
        pytest.param(
            "data.csv",
            'text,label\na,x\n"never closed,y\nb,z\nc,w\n',
            3,
            "text",
            "unexpected end of data (broken quoting",
            id="unclosed-quote",
        ),
        pytest.param(
            "data.csv",
            'text,label\n"quoted" then more,x\n',
            2,
            "text",
            "',' expected after '\"' (broken quoting",
            id="text-after-closing-quote",
        ),
        pytest.param(
            "data.csv",
            "text,label\na,x\nb,y,z\n",
            3,
            None,
            "expected 2 fields, found 3",
            id="too-many-fields",
        ),
        pytest.param(
            "data.csv",
            "text,label\na,x\nonly\n",
            3,
            "label",
            "expected 2 fields, found 1",
            id="too-few-fields",
        ),
        pytest.param(
            "data.csv",
            'text,label\n"a\nb\nc",x,extra\n',
            2,
            None,
            "expected 2 fields, found 3 in a record spanning lines 2-4 (an unclosed quote?)",
            id="multi-line-record-with-wrong-field-count",
        ),
        pytest.param(
            "data.csv",
            "text,label\nok,x\ncaf\xe9 au lait,y\n".encode("latin-1"),
            3,
            None,
            "byte 0xE9 at byte column 4 is not valid UTF-8; re-save the file as UTF-8",
            id="latin-1",
        ),
        pytest.param(
            "data.jsonl",
            '{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n',
            2,
            None,
            "malformed JSON: Expecting property name enclosed in double quotes at character 15",
            id="bad-jsonl-line",
        ),
        pytest.param(
            "data.jsonl",
            '{"text": "a", "label": "x"}\n\n{"text": "b"}\n',
            3,
            "label",
            "missing key; this line has keys 'text'",
            id="jsonl-missing-key",
        ),
        pytest.param(
            "data.jsonl",
            '["a", "x"]\n',
            1,
            None,
            "expected a JSON object, found an array",
            id="jsonl-array",
        ),
        pytest.param(
            "data.jsonl",
            '{"text": "a", "label": 1.5}\n',
            1,
            "label",
            "label must be a string or an integer, got float 1.5",
            id="jsonl-float-label",
        ),
        pytest.param("data.csv", "", None, None, "no rows: the file is empty", id="empty-file"),
        pytest.param(
            "data.csv", "text,label\n\n", None, None, "no rows after the header", id="header-only"
        ),
        pytest.param(
            "data.jsonl", "\n\n", None, None, "no rows: the file is empty", id="empty-jsonl"
        ),
    ],
)
def test_bad_files_name_the_file_line_and_column_and_write_nothing(
    tmp_path: Path,
    name: str,
    content: str | bytes,
    line: int | None,
    column: str | None,
    problem: str,
) -> None:
    path = _write(tmp_path, name, content)
    before = _snapshot(tmp_path)
    with pytest.raises(DataValidationError) as caught:
        load_file(path)
    error = caught.value
    assert (error.path, error.line, error.column) == (str(path), line, column)
    assert problem in error.problem
    message = str(error)
    assert "\n" not in message
    where = ", ".join(
        [str(path)]
        + ([f"line {line}"] if line is not None else [])
        + ([f"column {column!r}"] if column is not None else [])
    )
    assert message.startswith(f"{where}: ")
    assert _snapshot(tmp_path) == before


def test_the_exact_message_of_an_empty_label(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.csv", "text,label\na,x\nb,y\nc,z\nd,w\ne,v\nf,\n")
    with pytest.raises(DataValidationError) as caught:
        load_file(path)
    assert str(caught.value) == f"{path}, line 7, column 'label': empty label"


def test_missing_column_without_header_lists_the_index_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.tsv", "ham\thello\n")
    with pytest.raises(DataValidationError) as caught:
        load_file(path, header=False, text_col=2, label_col=0)
    assert (caught.value.line, caught.value.column) == (1, "2")
    assert "rows have columns '0', '1'" in str(caught.value)


def test_a_json_document_saved_as_json_gets_a_json_lines_hint(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.json", '{\n  "text": "a",\n  "label": "x"\n}\n')
    with pytest.raises(DataValidationError, match="one object per line") as caught:
        load_file(path)
    assert caught.value.line == 1


def test_bad_arguments_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        load_file(tmp_path / "absent.csv")
    with pytest.raises(ConfigurationError, match="unknown format 'xml'"):
        load_file(tmp_path / "absent.csv", format="xml")
    with pytest.raises(ConfigurationError, match="header=False applies to csv and tsv"):
        load_file(tmp_path / "absent.jsonl", header=False)
    odd = _write(tmp_path, "data.txt", "text,label\na,b\n")
    with pytest.raises(
        DataValidationError, match=r"cannot tell the format from the suffix '\.txt'"
    ):
        load_file(odd)
    assert load_file(odd, format="csv").texts == ("a",)


def test_load_hf_maps_class_labels_to_names() -> None:
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "intent": datasets.ClassLabel(names=["no", "yes"])}
    )
    dataset = datasets.Dataset.from_dict(
        {"sentence": ["is it", "it is not", "sure"], "intent": [1, 0, 1]}, features=features
    )
    rows = load_hf(dataset, text_col="sentence", label_col="intent", source="hf:toy")
    assert rows.texts == ("is it", "it is not", "sure")
    assert rows.labels == ("yes", "no", "yes")
    assert rows.source == "hf:toy"
    plain = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [7, 8]})
    assert load_hf(plain).labels == ("7", "8")


def test_load_hf_errors_name_the_row_and_column() -> None:
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])}
    )
    unlabelled = datasets.Dataset.from_dict(
        {"text": ["x", "y", "z"], "label": [0, 1, -1]}, features=features
    )
    with pytest.raises(DataValidationError) as caught:
        load_hf(unlabelled)
    assert str(caught.value) == "<datasets.Dataset>, line 3, column 'label': empty label"
    blank = datasets.Dataset.from_dict({"text": ["x", " "], "label": ["a", "b"]})
    with pytest.raises(DataValidationError) as caught:
        load_hf(blank, source="mine")
    assert str(caught.value) == "mine, line 2, column 'text': empty text"
    with pytest.raises(DataValidationError, match="missing column; the dataset has columns 'text'"):
        load_hf(blank, label_col="intent")
    with pytest.raises(DataValidationError, match=r"pass one split, e\.g\. dataset\['train'\]"):
        load_hf(datasets.DatasetDict({"train": blank}))
