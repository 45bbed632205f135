"""Every form of `dataset_name`, the handbook's `dataset_mixture` next to our `share_mixture`, TRL's `datasets:`
list, and the task-suite fields of a recipe pointed at other data.

The data are the shipped examples under examples/data/ (converted in a temporary directory where a test needs
another file format or a `save_to_disk` directory).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset

from alignment.commands import cli
from alignment.configs import AlignmentScriptArguments, HandbookMixtureConfig
from alignment.data_loading import limit_rows_per_domain, load_recipe_datasets, load_source

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"
PAIRS = EXAMPLES / "preference-standard"
UF = EXAMPLES / "ultrafeedback-binarized"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _file_forms(tmp_path: Path) -> dict[str, Path]:
    """The example's train split as a .jsonl (shipped), .json, .csv and .parquet file."""
    train = Dataset.from_list(_rows(PAIRS / "train.jsonl"))
    forms = {"jsonl": PAIRS / "train.jsonl"}
    for suffix, write in (("json", train.to_json), ("csv", train.to_csv), ("parquet", train.to_parquet)):
        forms[suffix] = tmp_path / f"pairs.{suffix}"
        write(str(forms[suffix]))
    return forms


def _dpo_argv(tiny_model_dir, tmp_path, *extra):
    return ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", tiny_model_dir,
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--save_strategy", "no", *extra]


# ------------------------------------------------------------------------------------------ dataset_name forms


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet"])
def test_a_single_file_is_the_train_split(tmp_path, suffix):
    path = _file_forms(tmp_path)[suffix]
    data = load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(path)))
    assert list(data) == ["train"]
    expected = _rows(PAIRS / "train.jsonl")
    assert data["train"]["prompt"] == [row["prompt"] for row in expected]
    if suffix != "csv":  # pandas' CSV reader turns the answers " 5" into the integer 5
        assert data["train"].to_list() == expected


def test_save_to_disk_dataset_and_datasetdict(tmp_path):
    train, test = (Dataset.from_list(_rows(PAIRS / f"{split}.jsonl")) for split in ("train", "test"))
    train.save_to_disk(str(tmp_path / "single"))
    DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    single = load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(tmp_path / "single")))
    assert list(single) == ["train"] and single["train"].to_list() == train.to_list()
    both = load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(tmp_path / "dict")))
    assert sorted(both) == ["test", "train"] and both["test"].to_list() == test.to_list()


def test_a_directory_of_split_files_and_splits_datasets_does_not_name():
    data = load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(PAIRS)))
    assert len(data["train"]) == 8 and len(data["test"]) == 4
    # `datasets` files train_prefs.jsonl under `train`; asked for `train_prefs` by name, the file of that name is read.
    args = AlignmentScriptArguments(dataset_name=str(UF), dataset_train_split="train_prefs",
                                    dataset_test_split="test_prefs")
    data = load_recipe_datasets(args)
    assert data["train_prefs"].to_list() == _rows(UF / "train_prefs.jsonl")
    assert data["test_prefs"].to_list() == _rows(UF / "test_prefs.jsonl")
    assert load_source(str(UF), split="test_prefs").to_list() == _rows(UF / "test_prefs.jsonl")


def test_a_file_has_no_other_split(tmp_path):
    with pytest.raises(ValueError, match=r"has no split 'test'.*a single file or a saved `Dataset` is split `train`"):
        load_source(str(PAIRS / "train.jsonl"), split="test")
    odd = tmp_path / "pairs.xlsx"
    odd.write_text("x")
    with pytest.raises(ValueError, match=r"Cannot tell the format of the data file .*pairs.xlsx"):
        load_source(str(odd))


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b'{"prompt": "caf\xe9"}\n', "is not UTF-8")])
def test_a_single_bad_file_as_dataset_name_is_named(tmp_path, content, message):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"Data file {path} \(from `dataset_name`\) {message}"):
        load_recipe_datasets(AlignmentScriptArguments(dataset_name=str(path)))


@pytest.mark.parametrize("form", ["file", "save_to_disk"])
def test_one_step_from_a_file_or_a_saved_dataset_skips_evaluation_cleanly(tiny_model_dir, tmp_path, form):
    if form == "file":
        source = PAIRS / "train.jsonl"
    else:
        source = tmp_path / "saved"
        Dataset.from_list(_rows(PAIRS / "train.jsonl")).save_to_disk(str(source))
    trained, results = cli.dpo_main(_dpo_argv(tiny_model_dir, tmp_path, "--dataset_name", str(source)))
    assert trained.state.global_step == 1
    assert "preference" not in results and "after" not in results  # no test split: nothing evaluated, no crash


# ------------------------------------------------------------------------------- handbook dataset_mixture schema


def _write_split(tmp_path: Path, name: str, start: int, n: int) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{name} {i}", "chosen": "a", "rejected": "b", "extra": i}) + "\n"
                            for i in range(start, start + n)))
    return path


@pytest.mark.parametrize("test_split_size", [None, 0.25, 3])
def test_handbook_mixture_matches_the_handbook_algorithm(tmp_path, test_split_size):
    first, second = _write_split(tmp_path, "first", 0, 20), _write_split(tmp_path, "second", 100, 10)
    section = {"datasets": [{"id": str(first), "columns": ["prompt", "chosen", "rejected"], "weight": 0.5},
                            {"id": str(second), "columns": ["prompt", "chosen", "rejected"]}],
               "seed": 7, "test_split_size": test_split_size}
    data = load_recipe_datasets(AlignmentScriptArguments(dataset_mixture=json.dumps(section)))

    # Independently: the handbook's get_dataset (src/alignment/data.py) step by step on the same files.
    a = load_dataset("json", data_files=str(first), split="train").select_columns(["prompt", "chosen", "rejected"])
    a = a.shuffle(seed=7).select(range(int(len(a) * 0.5)))  # weight: fraction kept = 10 of 20 rows
    b = load_dataset("json", data_files=str(second), split="train").select_columns(["prompt", "chosen", "rejected"])
    combined = concatenate_datasets([a, b]).shuffle(seed=7)
    expected = (DatasetDict({"train": combined}) if test_split_size is None
                else combined.train_test_split(test_size=test_split_size, seed=7))
    assert sorted(data) == sorted(expected)
    for split in expected:
        assert data[split].to_list() == expected[split].to_list()
    assert sum(len(d) for d in data.values()) == 20  # 10 kept of the first, all 10 of the second
    assert sum(r["prompt"].startswith("first") for d in data.values() for r in d) == 10


# The zephyr-7b-beta DPO recipe of the alignment-handbook (recipes/zephyr-7b-beta/dpo/config_full.yaml), its data
# section verbatim except `id` (a Hub id there, the shipped UltraFeedback example here) and `test_split_size` (2000
# rows there; the example has 12).
ZEPHYR_DATA = """
dataset_mixture:
  datasets:
    - id: {uf}
      config: default
      split: train_prefs
      columns:
        - chosen
        - rejected
      weight: 1.0
    - id: {uf}
      config: default
      split: test_prefs
      columns:
        - chosen
        - rejected
      weight: 1.0
  test_split_size: 2
  seed: 0
"""


def test_zephyr_dpo_recipe_mixture_parses_and_trains(tiny_model_dir, tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes/tiny/dpo.yaml").read_text())
    recipe = {k: v for k, v in recipe.items() if k not in ("dataset_name", "task_domains", "train_limit_per_domain",
                                                           "eval_limit_per_domain")}
    recipe.update(yaml.safe_load(ZEPHYR_DATA.format(uf=UF)))
    path = tmp_path / "zephyr.yaml"
    path.write_text(yaml.safe_dump(recipe))
    trained, results = cli.dpo_main(["--config", str(path), "--model_name_or_path", tiny_model_dir, "--output_dir",
                                     str(tmp_path / "out"), "--max_steps", "1", "--save_strategy", "no"])
    assert trained.state.global_step == 1
    assert len(trained.train_dataset) == 10 and "preference" in results  # 8 + 4 rows, 2 held out and evaluated


def test_the_old_share_schema_under_dataset_mixture_says_rename_it():
    for section in ({"datasets": [{"path": "task-suite", "domains": ["addition"], "weight": 1.0}]},
                    {"datasets": [{"id": "a"}], "policy": "upsample"}):
        with pytest.raises(ValueError, match="rename the section to `share_mixture`"):
            AlignmentScriptArguments(dataset_mixture=section)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['test_size'\]"):
        AlignmentScriptArguments(dataset_mixture={"datasets": [{"id": "a"}], "test_size": 0.1})
    with pytest.raises(ValueError, match=r"datasets\[0\] must be a mapping with `id`"):
        AlignmentScriptArguments(dataset_mixture={"datasets": [{"id": "a", "wieght": 1.0}]})
    parsed = AlignmentScriptArguments(dataset_mixture={"datasets": [{"id": "a", "split": "x"}], "test_split_size": 5})
    assert isinstance(parsed.dataset_mixture, HandbookMixtureConfig) and parsed.dataset_mixture.datasets[0].split == "x"


def test_handbook_weight_above_one_is_a_clear_error(tmp_path):
    path = _write_split(tmp_path, "few", 0, 4)
    args = AlignmentScriptArguments(dataset_mixture={"datasets": [{"id": str(path), "weight": 2.0}]})
    with pytest.raises(ValueError, match=r"fraction of the dataset kept, in \[0, 1\].*share_mixture"):
        load_recipe_datasets(args)


def test_handbook_mixture_files_are_checked_before_loading(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = AlignmentScriptArguments(dataset_mixture={"datasets": [{"id": str(empty)}]})
    with pytest.raises(ValueError, match=r"empty.jsonl \(from `dataset_mixture.datasets\[0\]`\) is empty"):
        load_recipe_datasets(args)


def test_trl_datasets_list_still_loads(tiny_model_dir, tmp_path):
    recipe = {k: v for k, v in yaml.safe_load((ROOT / "recipes/tiny/dpo.yaml").read_text()).items()
              if k not in ("dataset_name", "task_domains", "train_limit_per_domain")}
    recipe["datasets"] = [{"path": "json", "data_files": {"train": str(PAIRS / "train.jsonl"),
                                                          "test": str(PAIRS / "test.jsonl")}}]
    path = tmp_path / "trl.yaml"
    path.write_text(yaml.safe_dump(recipe))
    trained, _ = cli.dpo_main(["--config", str(path), "--model_name_or_path", tiny_model_dir, "--output_dir",
                               str(tmp_path / "out"), "--max_steps", "1", "--save_strategy", "no"])
    assert trained.train_dataset.num_rows == 8 and trained.state.global_step == 1


# ------------------------------------------------------------------- task-suite fields of a recipe on other data


def test_recipe_task_suite_fields_are_dropped_with_one_warning(tiny_model_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="alignment"):
        trained, _ = cli.dpo_main(_dpo_argv(tiny_model_dir, tmp_path, "--dataset_name", str(PAIRS)))
    warnings = [r.getMessage() for r in caplog.records if "only describe" in r.getMessage()]
    assert warnings == ["Ignoring `task_domains`, `train_limit_per_domain` from the recipe: these fields only describe "
                        f"`dataset_name: task-suite`, and the data is {str(PAIRS)!r}."]
    assert trained.state.global_step == 1 and trained.train_dataset.num_rows == 8


def test_task_suite_fields_on_the_command_line_with_other_data_are_an_error(tiny_model_dir, tmp_path):
    message = r"`--task_domains` on the command line: these fields only describe `dataset_name: task-suite`"
    with pytest.raises(ValueError, match=message):
        cli.dpo_main(_dpo_argv(tiny_model_dir, tmp_path, "--dataset_name", str(PAIRS), "--task_domains", "addition"))


@pytest.mark.parametrize("word", ["none", "None", "null", ""])
def test_task_domains_none_unsets_it(word):
    assert AlignmentScriptArguments(task_domains=[word]).task_domains is None
    assert AlignmentScriptArguments(task_domains=["addition"]).task_domains == ["addition"]


def test_task_domains_none_on_the_command_line_selects_every_domain(tiny_model_dir, tmp_path):
    trained, _ = cli.dpo_main(_dpo_argv(tiny_model_dir, tmp_path, "--task_domains", "none"))
    assert len(set(trained.train_dataset["domain"])) > 2  # the recipe's [addition, comparison] was unset


def test_eval_limit_per_domain_applies_to_any_answer_split():
    rows = Dataset.from_list([{"prompt": str(i), "answer": str(i), "domain": "ab"[i % 2]} for i in range(10)])
    limited = limit_rows_per_domain(rows, 2)
    assert limited["prompt"] == ["0", "1", "2", "3"]
    assert limit_rows_per_domain(rows.remove_columns("domain"), 3)["prompt"] == ["0", "1", "2"]
    assert limit_rows_per_domain(rows, None) is rows

    from alignment.commands.script_utils import answer_eval_dataset

    args = AlignmentScriptArguments(dataset_name="prompts", eval_limit_per_domain=1)
    assert answer_eval_dataset(args, DatasetDict({"test": rows}))["prompt"] == ["0", "1"]


def test_a_missing_local_data_file_names_the_path_and_the_field(tmp_path, monkeypatch):
    from alignment.data_loading import load_source

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"No data file at .*prefs\.jsonl.*`dataset_name`.*working directory"):
        load_source("data/prefs.jsonl")
