"""Data sources, forget selection, split reproducibility, split files and the decoded-image cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnx.data import (ForgetSpec, Normalization, apply_split_file, competition_checkpoint, detect_source, load,
                           save_split, select_forget)
from unlearnx.data import cache as image_cache
from unlearnx.data.imagefolder import CIFAR10_NORMALIZATION

try:
    from tests.fixtures import read_csv, write_cifar_pickle, write_competition_folder, write_imagefolder
except ImportError:  # pytest puts tests/ itself on sys.path when tests/ is not a package
    from fixtures import read_csv, write_cifar_pickle, write_competition_folder, write_imagefolder


def pil_pixels(path) -> torch.Tensor:
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    """Loads without an explicit cache_dir must not write to the user's ~/.cache."""
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    return write_competition_folder(tmp_path_factory.mktemp("competition"), n_people=20, images_per_person=10,
                                    arch="small")


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"), classes=3, per_class=12, test_per_class=6)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


# --- the embedded default -------------------------------------------------------------------------

def test_digits_default_sizes_shapes_and_labels():
    splits = load()
    sizes = {k: len(v) for k, v in splits.named().items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 359 and sizes["validation"] == 180
    assert sizes["forget"] == round(0.1 * (1797 - 359 - 180))
    assert splits.input_shape == (3, 16, 16) and splits.retain.images.dtype == torch.uint8
    assert splits.num_classes == 10 and splits.kind == "digits"
    labels = torch.cat([s.labels for s in splits.named().values()])
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert load("digits").split_hash() == splits.split_hash()


# --- competition layout ---------------------------------------------------------------------------

def test_competition_folder_loads_rows_labels_groups_and_pixels(competition, cache_dir):
    splits = load(competition, cache_dir=cache_dir)
    assert detect_source(competition) == "competition" and splits.kind == "competition"
    for name, split in (("retain", splits.retain), ("forget", splits.forget), ("validation", splits.validation)):
        rows = read_csv(competition / f"{name}.csv")
        assert split.ids == [r["image_id"] for r in rows]
        assert split.labels.tolist() == [int(r["age_group"]) for r in rows]
        assert split.groups.tolist() == [int(r["person_id"]) for r in rows]
    assert splits.test is None and splits.num_classes == 10
    assert splits.normalization == Normalization.raw()
    # raw 0-255 floats reach the model, as the competition fed them
    assert torch.equal(splits.normalization(splits.retain.images[:2]), splits.retain.images[:2].float())
    person, _, k = splits.forget.ids[3].partition("-")
    assert torch.equal(splits.forget.images[3], pil_pixels(competition / "images" / person / f"{k}.png"))
    assert set(splits.forget.groups.tolist()) == {1, 2}  # the fixture forgets the 2 smallest person ids


def test_competition_optional_files_checkpoint_and_class_weights(competition, tmp_path, cache_dir):
    from unlearnx.models import load_checkpoint

    splits = load(competition, cache_dir=cache_dir)
    assert splits.checkpoint == competition / "original_model.pth" == competition_checkpoint(competition)
    model = load_checkpoint(splits.checkpoint, None, splits.num_classes)
    assert model.fc.out_features == 10
    declared = json.loads((competition / "age_class_weights.json").read_text())
    assert splits.class_counts == [declared[str(c)] for c in range(10)]

    bare = write_competition_folder(tmp_path / "bare", n_people=6, images_per_person=4, with_checkpoint=False,
                                    with_class_weights=False)
    splits = load(bare, cache_dir=cache_dir)
    assert splits.checkpoint is None and competition_checkpoint(bare) is None
    # neither a checkpoint nor a weights file: the labels (people 1..6 have age groups 1..6) set the class count
    assert splits.num_classes == 7
    train = torch.cat([splits.retain.labels, splits.forget.labels])
    assert splits.class_counts == torch.bincount(train, minlength=7).tolist()


def test_competition_classes_come_from_the_data_and_test_csv_is_the_test_split(tmp_path, cache_dir):
    from unlearnx.models import build_model

    root = write_competition_folder(tmp_path / "ages", n_people=16, images_per_person=5, num_classes=8,
                                    with_checkpoint=False, test_fraction=0.2)
    splits = load(root, cache_dir=cache_dir)
    assert splits.num_classes == 8 and splits.class_names[-1] == "age group 7"
    rows = read_csv(root / "test.csv")
    assert rows and splits.test.ids == [r["image_id"] for r in rows]
    assert splits.test.labels.tolist() == [int(r["age_group"]) for r in rows]
    assert splits.held_out == "test" and splits.summary()["held_out"] == "test"
    assert len(splits.class_counts) == 8
    # the labels alone also give 8 (people 1..16 cover groups 0..7)
    (root / "age_class_weights.json").unlink()
    assert load(root, cache_dir=cache_dir).num_classes == 8
    # a checkpoint's head decides when given, and may name more classes than the labels show
    torch.save(build_model("small", 12).state_dict(), tmp_path / "twelve.pth")
    assert load(root, cache_dir=cache_dir, checkpoint=tmp_path / "twelve.pth").num_classes == 12
    # without test.csv, validation stays the held-out split and the summary says so
    (root / "test.csv").unlink()
    splits = load(root, cache_dir=cache_dir)
    assert splits.test is None and splits.held_out == "validation"
    assert splits.summary()["held_out"] == "validation (the source has no test split)"


def test_competition_forget_groups_redraws_whole_people(competition, cache_dir):
    given = load(competition, cache_dir=cache_dir)
    splits = load(competition, forget="groups:3", seed=1, cache_dir=cache_dir)
    people = set(splits.forget.groups.tolist())
    assert len(people) == 3
    assert not people & set(splits.retain.groups.tolist())  # every train image of a chosen person is forgotten
    assert len(splits.retain) + len(splits.forget) == len(given.retain) + len(given.forget)
    assert splits.validation.ids == given.validation.ids
    again = load(competition, forget="groups:3", seed=1, cache_dir=cache_dir)
    other = load(competition, forget="groups:3", seed=2, cache_dir=cache_dir)
    assert again.split_hash() == splits.split_hash() != other.split_hash()


# --- ImageFolder ------------------------------------------------------------------------------------

def test_imagefolder_classes_halves_normalisation_and_pixels(imagefolder, cache_dir):
    splits = load(imagefolder, cache_dir=cache_dir)
    assert detect_source(imagefolder) == "imagefolder"
    assert splits.class_names == ["c0", "c1", "c2"] and splits.num_classes == 3
    assert len(splits.retain) + len(splits.forget) == 36 and len(splits.forget) == round(0.1 * 36)
    assert len(splits.test) == len(splits.validation) == 9
    held_out = sorted(splits.test.ids + splits.validation.ids)
    assert held_out == sorted(f"test/c{c}/{k:04d}.jpg" for c in range(3) for k in range(6))
    # the starting kit's split: random_split(test, [0.5, 0.5], generator=manual_seed(42)), test = first half
    from torch.utils.data import random_split

    all_test = sorted(held_out)
    first, second = random_split(range(18), [0.5, 0.5], generator=torch.Generator().manual_seed(42))
    assert splits.test.ids == [all_test[i] for i in first.indices]
    assert splits.validation.ids == [all_test[i] for i in second.indices]
    for split in (splits.retain, splits.test):
        assert split.labels.tolist() == [int(i.split("/")[1][1:]) for i in split.ids]
    assert splits.normalization == CIFAR10_NORMALIZATION
    assert torch.equal(splits.retain.images[5], pil_pixels(imagefolder / splits.retain.ids[5]))
    assert splits.train_split().ids == sorted(f"train/c{c}/{k:04d}.jpg" for c in range(3) for k in range(12))


def test_imagefolder_png_grey_images_become_rgb(tmp_path):
    root = write_imagefolder(tmp_path / "png", classes=2, per_class=5, test_per_class=2, ext="png")
    Image.fromarray(np.full((32, 32), 77, np.uint8)).save(root / "train" / "c1" / "grey.png")
    splits = load(root, cache_dir=False)
    train = splits.train_split()
    grey = train.ids.index("train/c1/grey.png")
    assert train.images.shape[1] == 3 and bool((train.images[grey] == 77).all())
    assert not (tmp_path / "cache").exists()  # cache_dir=False writes nothing


def test_imagefolder_validation_folder_is_used_when_present(tmp_path):
    root = write_imagefolder(tmp_path / "tree", classes=2, per_class=5, test_per_class=3)
    write_imagefolder(tmp_path / "extra", classes=2, per_class=4, test_per_class=1)
    os.rename(tmp_path / "extra" / "train", root / "val")
    splits = load(root, cache_dir=False)
    assert len(splits.test) == 6 and len(splits.validation) == 8
    assert all(i.startswith("val/") for i in splits.validation.ids)


# --- CIFAR-10 pickle folder -------------------------------------------------------------------------

@pytest.mark.parametrize("nested", [True, False])
def test_cifar_pickle_folder(tmp_path, nested):
    folder = write_cifar_pickle(tmp_path, per_batch=20, test_size=20, nested=nested)
    splits = load(tmp_path if nested else folder)
    assert detect_source(tmp_path) == "cifar-pickle" and splits.kind == "cifar-pickle"
    assert len(splits.retain) == 90 and len(splits.forget) == 10
    assert len(splits.test) == len(splits.validation) == 10
    assert splits.class_names == [f"class{c}" for c in range(10)]
    import pickle

    with open(folder / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    train = splits.train_split()
    position = train.ids.index("data_batch_2:7")
    assert torch.equal(train.images[position], torch.from_numpy(batch[b"data"][7].reshape(3, 32, 32)))
    assert int(train.labels[position]) == batch[b"labels"][7]
    assert splits.normalization == CIFAR10_NORMALIZATION


# --- forget selection and reproducibility -----------------------------------------------------------

def test_forget_random_fraction_is_an_exact_count_of_distinct_sorted_indices():
    labels = torch.arange(40) % 4
    index = select_forget(labels, ForgetSpec.parse("random:0.25"), seed=3)
    assert index.numel() == 10 and torch.equal(index, torch.unique(index))
    assert torch.equal(index, select_forget(labels, ForgetSpec.parse("0.25"), seed=3))
    assert not torch.equal(index, select_forget(labels, ForgetSpec.parse("0.25"), seed=4))


def test_forget_classes_takes_every_example_of_those_classes(imagefolder, cache_dir):
    splits = load(imagefolder, forget="classes:0,2", cache_dir=cache_dir)
    assert sorted(set(splits.forget.labels.tolist())) == [0, 2] and len(splits.forget) == 24
    assert set(splits.retain.labels.tolist()) == {1}
    assert "classes 0,2" in splits.forget_description


def test_forget_groups_needs_a_source_with_groups(imagefolder, cache_dir):
    with pytest.raises(ValueError, match="needs a source with groups"):
        load(imagefolder, forget="groups:2", cache_dir=cache_dir)


@pytest.mark.parametrize("source", ["digits", "imagefolder", "pickle"])
def test_same_seed_same_split_hash_other_seed_other_hash(source, imagefolder, tmp_path, cache_dir):
    src = {"digits": "digits", "imagefolder": imagefolder,
           "pickle": write_cifar_pickle(tmp_path) if source == "pickle" else None}[source]
    first = load(src, seed=5, cache_dir=cache_dir)
    second = load(src, seed=5, cache_dir=cache_dir)
    assert first.split_hash() == second.split_hash()
    assert first.forget.ids == second.forget.ids
    assert load(src, seed=6, cache_dir=cache_dir).split_hash() != first.split_hash()


def test_split_hash_is_content_only_not_the_path(imagefolder, tmp_path):
    import shutil

    copy = shutil.copytree(imagefolder, tmp_path / "moved")
    assert load(copy, cache_dir=False).split_hash() == load(imagefolder, cache_dir=False).split_hash()


# --- split files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, forget", [("digits", "classes:3"), ("imagefolder", "random:0.3"),
                                            ("competition", "groups:4")])
def test_split_file_round_trip_is_exact(source, forget, imagefolder, competition, tmp_path, cache_dir):
    src = {"digits": "digits", "imagefolder": imagefolder, "competition": competition}[source]
    saved = load(src, forget=forget, seed=7, cache_dir=cache_dir)
    path = save_split(saved, tmp_path / "split.json")
    record = json.loads(path.read_text())
    assert record["split_hash"] == saved.split_hash() and len(record["forget_index"]) == len(saved.forget)
    # another seed and the default forget spec: the file decides
    reloaded = load(src, seed=0, split_file=path, cache_dir=cache_dir)
    assert reloaded.split_hash() == saved.split_hash()
    assert reloaded.forget.ids == saved.forget.ids and reloaded.retain.ids == saved.retain.ids
    assert torch.equal(reloaded.forget_index, saved.forget_index)
    also = apply_split_file(load(src, cache_dir=cache_dir), path)
    assert also.split_hash() == saved.split_hash()


def test_split_file_from_other_data_is_refused(imagefolder, tmp_path):
    path = save_split(load(imagefolder, cache_dir=False), tmp_path / "split.json")
    # same layout and sizes, different pixels
    other = write_imagefolder(tmp_path / "other", classes=3, per_class=12, test_per_class=6, seed=1)
    with pytest.raises(ValueError, match="data differ from those the split was saved from"):
        load(other, split_file=path, cache_dir=False)
    smaller = write_imagefolder(tmp_path / "smaller", classes=3, per_class=10, test_per_class=6)
    with pytest.raises(ValueError, match="training set of 36 examples.*has 30"):
        load(smaller, split_file=path, cache_dir=False)
    with pytest.raises(ValueError, match="saved for a imagefolder source"):
        load("digits", split_file=path)


def test_bad_split_files_name_the_problem(tmp_path):
    good = save_split(load(), tmp_path / "good.json")
    record = json.loads(good.read_text())
    cases = {
        "not json": ("{oops", "not valid JSON"),
        "other format": (json.dumps({"format": "x"}), "not an unlearnx split file"),
        "out of range": (json.dumps({**record, "forget_index": [0, 10**6]}), "positions in 0..1257"),
        "repeated": (json.dumps({**record, "forget_index": [1, 1]}), "lists a position twice"),
        "empty": (json.dumps({**record, "forget_index": []}), "non-empty list"),
        "no hash": (json.dumps({k: v for k, v in record.items() if k != "split_hash"}), "'split_hash' is missing"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load(split_file=path)
        assert str(path) in _message(lambda: load(split_file=path))
    with pytest.raises(FileNotFoundError, match="split file .* does not exist"):
        load(split_file=tmp_path / "absent.json")


def _message(fn) -> str:
    try:
        fn()
    except ValueError as exc:
        return str(exc)
    raise AssertionError("expected a ValueError")


# --- decoded-image cache ----------------------------------------------------------------------------

def test_second_load_reads_the_cache_without_decoding(imagefolder, cache_dir, monkeypatch):
    first = load(imagefolder, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("images-*.pt"))) == 2  # train/ and test/

    def no_decoding(paths):
        raise AssertionError("decoded although the cache holds these files")

    monkeypatch.setattr(image_cache, "decode_files", no_decoding)
    second = load(imagefolder, cache_dir=cache_dir)
    assert second.split_hash() == first.split_hash()
    assert not list(cache_dir.glob("*.tmp"))  # written atomically, nothing left behind


def test_changed_file_invalidates_the_cache(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "tree", classes=2, per_class=5, test_per_class=2)
    cache_dir = tmp_path / "cache"
    load(root, cache_dir=cache_dir)
    changed = root / "train" / "c0" / "0001.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse clocks
    decoded = []
    real = image_cache.decode_files
    monkeypatch.setattr(image_cache, "decode_files", lambda paths: decoded.append(len(paths)) or real(paths))
    splits = load(root, cache_dir=cache_dir)
    assert decoded == [10]  # train/ decoded again, test/ still cached
    train = splits.train_split()
    assert int(train.images[train.ids.index("train/c0/0001.jpg")].max()) == 0


def test_unreadable_cache_entry_is_decoded_again(imagefolder, cache_dir):
    first = load(imagefolder, cache_dir=cache_dir)
    for entry in cache_dir.glob("images-*.pt"):
        entry.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="ignoring unreadable image cache"):
        second = load(imagefolder, cache_dir=cache_dir)
    assert second.split_hash() == first.split_hash()
    assert load(imagefolder, cache_dir=cache_dir).split_hash() == first.split_hash()  # rewritten, readable


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path, imagefolder):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "env-cache"))
    assert image_cache.default_cache_dir() == tmp_path / "env-cache"
    load(imagefolder)
    assert len(list((tmp_path / "env-cache").glob("images-*.pt"))) == 2
    monkeypatch.delenv("UNLEARNX_CACHE")
    assert image_cache.default_cache_dir() == image_cache.Path.home() / ".cache" / "unlearnx"


def test_competition_images_are_cached_too(competition, cache_dir, monkeypatch):
    first = load(competition, cache_dir=cache_dir)
    monkeypatch.setattr(image_cache, "decode_files", lambda paths: (_ for _ in ()).throw(AssertionError("decoded")))
    assert load(competition, cache_dir=cache_dir).split_hash() == first.split_hash()


# --- Splits bookkeeping -----------------------------------------------------------------------------

def test_train_split_restores_source_order_and_with_forget_moves_examples():
    from unlearnx.data import Split, Splits

    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    train = Split(images, torch.arange(10) % 2, [f"x{i}" for i in range(10)], torch.arange(10) // 3)
    retain, forget = train.partition(torch.tensor([2, 7]))
    assert retain.ids == ["x0", "x1", "x3", "x4", "x5", "x6", "x8", "x9"] and forget.groups.tolist() == [0, 2]
    splits = Splits(retain, forget, None, None, num_classes=2, source="toy", forget_index=torch.tensor([2, 7]))
    restored = splits.train_split()
    assert restored.ids == train.ids and torch.equal(restored.images, images)
    assert torch.equal(restored.groups, train.groups)
    moved = splits.with_forget(torch.tensor([9, 0, 4]), "three")
    assert moved.forget.ids == ["x0", "x4", "x9"] and moved.forget_index.tolist() == [0, 4, 9]
    assert moved.train_split().ids == train.ids and moved.split_hash() != splits.split_hash()
    # without a forget_index, forget is taken to follow retain
    plain = Splits(retain, forget, None, None, num_classes=2, source="toy")
    assert plain.forget_index.tolist() == [8, 9] and plain.train_split().ids == retain.ids + forget.ids
    with pytest.raises(ValueError, match="forget_index must be 2 sorted, distinct positions in 0..9"):
        Splits(retain, forget, None, None, num_classes=2, source="toy", forget_index=torch.tensor([7, 2]))
    with pytest.raises(ValueError, match="split groups must be"):
        Split(images, torch.zeros(10), None, torch.zeros(3))


def test_default_fixture_checkpoint_is_a_resnet18(tmp_path):
    from unlearnx.models import load_checkpoint

    root = write_competition_folder(tmp_path / "c", n_people=4, images_per_person=3)
    splits = load(root, cache_dir=False)
    model = load_checkpoint(splits.checkpoint, "resnet18", splits.num_classes)
    assert model.fc.out_features == 10 and model.conv1.kernel_size == (7, 7)
