"""Bad input to the data sources: each a clear error naming the file, the row or the column."""
from __future__ import annotations

import pickle
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from unlearnx.data import load

try:
    from tests.fixtures import (read_csv, write_checkpoint, write_cifar_pickle, write_competition_folder, write_csv,
                                write_imagefolder)
except ImportError:  # pytest puts tests/ itself on sys.path when tests/ is not a package
    from fixtures import (read_csv, write_checkpoint, write_cifar_pickle, write_competition_folder, write_csv,
                          write_imagefolder)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    """Loads without an explicit cache_dir must not write to the user's ~/.cache."""
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_competition_folder(tmp_path_factory.mktemp("pristine"), n_people=6, images_per_person=5,
                                    with_checkpoint=False)


@pytest.fixture
def folder(pristine, tmp_path):
    """A fresh copy of a small competition folder to break."""
    return shutil.copytree(pristine, tmp_path / "competition")


def edit_rows(path, change):
    rows = read_csv(path)
    rows = change(rows)
    columns = list(rows[0]) if rows else ["person_id", "age_group", "age", "image_id"]
    write_csv(path, rows, columns)


def load_error(folder, kind=ValueError) -> str:
    with pytest.raises(kind) as info:
        load(folder, cache_dir=False)
    return str(info.value)


@pytest.mark.parametrize("name", ["retain.csv", "forget.csv", "validation.csv"])
def test_missing_csv(folder, name):
    (folder / name).unlink()
    assert load_error(folder, FileNotFoundError) == f"competition folder {folder}: missing {name}"


@pytest.mark.parametrize("column", ["person_id", "age_group", "age", "image_id"])
def test_missing_column_names_file_and_column(folder, column):
    edit_rows(folder / "validation.csv", lambda rows: [{k: v for k, v in r.items() if k != column} for r in rows])
    message = load_error(folder)
    assert str(folder / "validation.csv") in message and f"missing column {column!r}" in message


def test_missing_image_names_csv_line_and_path(folder):
    rows = read_csv(folder / "retain.csv")
    person, _, k = rows[2]["image_id"].partition("-")
    (folder / "images" / person / f"{k}.png").unlink()
    message = load_error(folder, FileNotFoundError)
    assert f"{folder / 'retain.csv'} line 4" in message  # header is line 1, rows[2] is line 4
    assert str(folder / "images" / person / f"{k}.png") in message and "does not exist" in message


@pytest.mark.parametrize("value, problem", [("10", "outside 0..9"), ("-1", "outside 0..9"),
                                            ("young", "not an integer"), ("2.5", "not an integer")])
def test_bad_age_group_names_file_and_line(folder, value, problem):
    def change(rows):
        rows[1]["age_group"] = value
        return rows

    edit_rows(folder / "forget.csv", change)
    message = load_error(folder)
    assert f"{folder / 'forget.csv'} line 3" in message and problem in message


def test_empty_forget_csv(folder):
    edit_rows(folder / "forget.csv", lambda rows: [])
    assert "forget.csv has no rows" in load_error(folder)


def test_image_in_both_retain_and_forget(folder):
    shared = read_csv(folder / "retain.csv")[0]
    edit_rows(folder / "forget.csv", lambda rows: rows + [shared])
    message = load_error(folder)
    assert re.search(rf"image_id '{shared['image_id']}' is in both retain.csv \(line 2\) and forget.csv \(line \d+\)",
                     message), message


def test_image_listed_twice_in_one_csv(folder):
    edit_rows(folder / "validation.csv", lambda rows: rows + [rows[0]])
    assert "twice in validation.csv" in load_error(folder)


def test_image_of_another_size_is_named(folder):
    rows = read_csv(folder / "forget.csv")
    person, _, k = rows[1]["image_id"].partition("-")
    odd = folder / "images" / person / f"{k}.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(odd)
    message = load_error(folder)
    assert str(odd) in message and "32x24" in message and "same size" in message


def test_malformed_image_id(folder):
    def change(rows):
        rows[0]["image_id"] = "nodash"
        return rows

    edit_rows(folder / "retain.csv", change)
    message = load_error(folder)
    assert f"{folder / 'retain.csv'} line 2" in message and "'nodash'" in message


def test_unreadable_image_is_named(folder):
    rows = read_csv(folder / "retain.csv")
    person, _, k = rows[0]["image_id"].partition("-")
    broken = folder / "images" / person / f"{k}.png"
    broken.write_bytes(b"not a png")
    message = load_error(folder)
    assert f"cannot decode image {broken}" in message


@pytest.mark.parametrize("text, message", [
    ('{"0": 3, "x": 1}', "key 'x' is not an age group"),
    ('{"-1": 3}', "age group -1 is negative"),
    ('{"0": -3}', "count for age group 0 must be a non-negative number"),
    ('{"0": "many"}', "count for age group 0 must be a non-negative number"),
    ('{}', "expected a non-empty object"),
    ('[1, 2]', "expected a non-empty object"),
    ('{"0": 1', "not valid JSON"),
])
def test_bad_class_weights_file(folder, text, message):
    (folder / "age_class_weights.json").write_text(text)
    assert f"{folder / 'age_class_weights.json'}: {message}" in load_error(folder)


def test_labels_beyond_the_class_weights_file_name_the_row(folder):
    # The file names age groups 0..2, but the folder's people have groups up to 6.
    (folder / "age_class_weights.json").write_text('{"0": 3, "1": 4, "2": 5}')
    message = load_error(folder)
    assert "is outside 0..2 (age_class_weights.json names 3 age groups)" in message
    assert "line" in message and "image_id" in message


def test_checkpoint_head_and_class_weights_file_must_agree(folder):
    write_checkpoint(folder / "original_model.pth", "small", 5)
    message = load_error(folder)
    assert f"the checkpoint {folder / 'original_model.pth'} predicts 5 classes but" in message
    assert "names 10 age groups (0..9); they must agree" in message
    (folder / "age_class_weights.json").unlink()
    # without the weights file the head decides, and a label beyond it is named
    message = load_error(folder)
    assert "is outside 0..4 (the checkpoint original_model.pth predicts 5 classes)" in message


# --- ImageFolder --------------------------------------------------------------------------------------

def test_imagefolder_image_of_another_size_is_named(tmp_path):
    root = write_imagefolder(tmp_path / "tree", classes=2, per_class=4, test_per_class=2)
    odd = root / "train" / "c1" / "0002.jpg"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(odd)
    message = load_error(root)
    assert str(odd) in message and "16x16" in message


def test_imagefolder_structure_errors(tmp_path):
    root = write_imagefolder(tmp_path / "tree", classes=2, per_class=4, test_per_class=2)
    (root / "test" / "stray").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "test" / "stray" / "x.png")
    assert "class folders ['stray'] that train/ does not have" in load_error(root)
    shutil.rmtree(root / "test")
    assert "missing test/" in load_error(root, FileNotFoundError)
    root2 = write_imagefolder(tmp_path / "tree2", classes=2, per_class=4, test_per_class=2)
    (root2 / "train" / "empty").mkdir()
    assert f"{root2 / 'train' / 'empty'} has no image files" in load_error(root2)


def test_unknown_and_missing_sources(tmp_path):
    assert "does not exist" in load_error(tmp_path / "nowhere", FileNotFoundError)
    (tmp_path / "plain").mkdir()
    assert "cannot tell what kind of data" in load_error(tmp_path / "plain")


# --- CIFAR pickle ----------------------------------------------------------------------------------

def test_pickle_missing_batch(tmp_path):
    folder = write_cifar_pickle(tmp_path, per_batch=10, test_size=10)
    (folder / "data_batch_3").unlink()
    assert load_error(tmp_path, FileNotFoundError) == f"CIFAR-10 pickle folder {folder}: missing data_batch_3"


def test_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar_pickle(tmp_path, per_batch=10, test_size=10)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": []}, f)
    message = load_error(tmp_path)
    assert str(folder / "data_batch_2") in message and "refusing to load builtins.print" in message


def test_pickle_label_out_of_range_is_named(tmp_path):
    folder = write_cifar_pickle(tmp_path, per_batch=10, test_size=10, num_classes=10)
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f)
    batch[b"labels"][4] = 12
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    assert "label 12" in load_error(tmp_path) and "test_batch:4" in load_error(tmp_path)


def test_pickle_wrong_shape(tmp_path):
    folder = write_cifar_pickle(tmp_path, per_batch=10, test_size=10)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10}, f)
    assert f"{folder / 'data_batch_1'}: 'data' must be uint8 [N, 3072]" in load_error(tmp_path)


def test_test_csv_is_checked_like_the_others(folder):
    shared = read_csv(folder / "validation.csv")[0]
    write_csv(folder / "test.csv", [shared])
    assert re.search(rf"image_id '{shared['image_id']}' is in both validation.csv \(line 2\) and test.csv \(line 2\)",
                     load_error(folder))
    write_csv(folder / "test.csv", [{**shared, "image_id": "nodash"}])
    assert f"{folder / 'test.csv'} line 2" in load_error(folder)
    write_csv(folder / "test.csv", [{k: v for k, v in shared.items() if k != "age"}], ["person_id", "age_group",
                                                                                      "image_id"])
    assert f"{folder / 'test.csv'}: missing column 'age'" in load_error(folder)
