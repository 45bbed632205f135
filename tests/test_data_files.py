"""Empty and non-UTF-8 local data files fail at load time naming the file, the line and the fix (`data_files`)."""

from __future__ import annotations

import json
import re

import pytest
from trl import DatasetMixtureConfig

import alignment.data_files as data_files
from alignment.configs import AlignmentScriptArguments
from alignment.data_files import check_data_file
from alignment.data_loading import load_recipe_datasets

ROW = {"prompt": "What is 1 + 2?", "chosen": "3", "rejected": "4"}
LATIN1 = "Caf\u00e9 au lait?".encode("latin-1")  # b"Caf\xe9 au lait?": 0xe9 starts a 3-byte UTF-8 sequence


def _jsonl(rows: int) -> bytes:
    return b"".join(json.dumps(ROW).encode() + b"\n" for _ in range(rows))


EMPTY = {
    "train.jsonl": (b"", "no data"),
    "train.json": (b"", "no data"),
    "train.csv": (b"", "no data"),
    "blank.jsonl": (b"\n  \n\n", "only whitespace"),
    "header.csv": (b"prompt,chosen,rejected\n", "only a header line"),
}


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_empty_data_file_is_named_before_loading(tmp_path, name):
    data, what = EMPTY[name]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / name).write_bytes(data)
    with pytest.raises(ValueError, match=rf"Data file {re.escape(str(folder / name))} \(from `dataset_name`\) is "
                                         rf"empty: it holds {what}.*Fill it"):
        load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(folder)))


@pytest.mark.parametrize("suffix, content, line, column", [
    # the third line of a .jsonl: the row with the Latin-1 byte
    (".jsonl", _jsonl(2) + b'{"prompt": "' + LATIN1 + b'", "chosen": "a", "rejected": "b"}\n', 3, 16),
    # the second row of a .csv: line 3 after the header
    (".csv", b"prompt,chosen,rejected\na,b,c\n" + LATIN1 + b",b,c\n", 3, 4),
])
def test_non_utf8_data_file_names_the_line_and_the_fix(tmp_path, suffix, content, line, column):
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / f"train{suffix}"
    path.write_bytes(content)
    with pytest.raises(ValueError) as raised:
        load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(folder)))
    message = str(raised.value)
    assert f"Data file {path} (from `dataset_name`) is not UTF-8: line {line}, column {column} has the byte(s) e9" \
        in message
    assert f"iconv -f latin1 -t utf-8 {path} >" in message


def test_mixture_entries_are_checked_and_named(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_bytes(_jsonl(3))
    bad.write_bytes(_jsonl(1) + b'{"prompt": "' + LATIN1 + b'", "chosen": "a", "rejected": "b"}\n')
    share = AlignmentScriptArguments(share_mixture={"datasets": [{"path": str(good), "weight": 0.5},
                                                                  {"path": str(bad), "weight": 0.5}]})
    with pytest.raises(ValueError, match=r"bad.jsonl \(from `share_mixture.datasets\[1\]`\) is not UTF-8: line 2"):
        load_recipe_datasets(share)
    # TRL's `datasets:` mixture: a packaged builder with `data_files`, resolved the way `load_dataset` resolves it
    trl_mixture = DatasetMixtureConfig(datasets=[{"path": "json", "data_files": str(good)},
                                                 {"path": "json", "data_files": {"train": [str(bad)]}}])
    with pytest.raises(ValueError, match=r"bad.jsonl \(from `datasets\[1\]`\) is not UTF-8: line 2"):
        load_recipe_datasets(AlignmentScriptArguments(), trl_mixture)


def test_valid_utf8_passes_across_block_boundaries(tmp_path, monkeypatch):
    # Blocks of 7 bytes cut multi-byte characters ("é" is 2 bytes, "€" 3); whole-line blocks must keep them whole.
    monkeypatch.setattr(data_files, "_CHUNK_BYTES", 7)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": "café € x" * k}, ensure_ascii=False) + "\n" for k in range(1, 6)),
                    encoding="utf-8")
    check_data_file(path)
    path.write_bytes(path.read_bytes() + b'{"prompt": "\xe9"}\n')
    with pytest.raises(ValueError, match="line 6, column 13"):
        check_data_file(path)


def test_good_local_directory_still_loads(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(_jsonl(3))
    (folder / "test.jsonl").write_text(json.dumps({**ROW, "prompt": "caf\u00e9"}, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    data = load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(folder)))
    assert data["train"].num_rows == 3 and data["test"][0]["prompt"] == "caf\u00e9"
