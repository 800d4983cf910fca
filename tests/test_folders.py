"""Any tree of class folders: layouts, checks, the seeded split, N-class runs and names."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as onp
import pytest
from conftest import write_image

from d2l_helpers import data, predict, runs
from d2l_helpers.data import ImageDataError, ImageFolder, ImageLayoutWarning, scan_folder

CLASSES3 = ("cat", "dog", "horse")


def make_tree(root: Path, classes=CLASSES3, per_class=(4, 2), splits=("train", "test"),
              size=(40, 30)) -> Path:
    """``root/<split>/<class>/NNN.jpg``, or ``root/<class>/NNN.jpg`` when ``splits`` is ()."""
    for k, cls in enumerate(classes):
        for split, n in zip(splits or ("",), per_class):
            for i in range(n):
                write_image(root / split / cls / f"{i:03d}.jpg", size=size,
                            color=(60 * k, 200 - 50 * k, 20 * i))
    return root


@pytest.fixture
def tree3(tmp_path) -> Path:
    return make_tree(tmp_path / "animals")


def test_a_split_tree_of_three_classes(tree3):
    tree = scan_folder(tree3)
    assert tree.classes == CLASSES3 and tree.layout == data.SPLIT_LAYOUT and tree.split is None
    assert tree.counts() == {"train": {c: 4 for c in CLASSES3}, "test": {c: 2 for c in CLASSES3}}
    assert [label for _, label in tree.items("test")] == [0, 0, 1, 1, 2, 2]
    assert len(tree.items("train", per_class=1)) == 3
    assert "3 classes, 12 train / 6 test" in tree.describe()


def test_image_folder_decodes_once_with_synsets_and_cache(tree3, monkeypatch):
    ds = ImageFolder(tree3, "train", short_side=20)
    assert len(ds) == 12 and ds.synsets == list(CLASSES3) and ds.cache_file.exists()
    img, label = ds[11]
    assert img.shape == (20, 27, 3) and ds.synsets[label] == "horse"
    monkeypatch.setattr(data, "read_image", lambda *a, **k: pytest.fail("decoded again"))
    again = ImageFolder(tree3, "train", short_side=20)
    assert (again[5][0].asnumpy() == ds[5][0].asnumpy()).all()


def _empty_test_split(r):
    for p in (r / "test").rglob("*.jpg"):
        p.unlink()


def _empty_train_cat(r):
    for p in (r / "train" / "cat").iterdir():
        p.unlink()


@pytest.mark.parametrize("break_it,expected", [
    (_empty_test_split, "holds no images"),
    (lambda r: shutil.rmtree(r / "test"), r"missing folder .*test \(found sub-folders: \['train'\]\)"),
    (lambda r: shutil.rmtree(r / "test" / "dog"),
     r"class 'dog' is in train/ but not in test/ \(missing folder .*test/dog\)"),
    (lambda r: write_image(r / "test" / "zebra" / "z.jpg"),
     "class 'zebra' is in test/ but not in train/"),
    (_empty_train_cat, r"class folder .*train/cat holds no images"),
])
def test_layout_problems_say_what_was_found_and_what_is_expected(tree3, break_it, expected):
    break_it(tree3)
    with pytest.raises(ImageDataError, match=expected) as err:
        scan_folder(tree3)
    msg = str(err.value)
    assert msg.startswith("Bad image folder layout:") and "Expected either <root>/train/<class>/" in msg


def test_a_single_class_and_a_missing_folder_are_refused(tmp_path):
    one = make_tree(tmp_path / "one", classes=("cat",))
    with pytest.raises(ImageDataError, match=r"only one class folder \('cat'\).*at least 2 classes"):
        scan_folder(one)
    flat_one = make_tree(tmp_path / "flat1", classes=("cat",), per_class=(5,), splits=())
    with pytest.raises(ImageDataError, match="only one class folder"):
        scan_folder(flat_one)
    with pytest.raises(ImageDataError, match=r"Image folder .*nope does not exist\. Expected"):
        scan_folder(tmp_path / "nope")
    loose = tmp_path / "loose"
    write_image(loose / "a.jpg")
    with pytest.raises(ImageDataError, match=r"no class folders in .*loose \(found 1 images"):
        scan_folder(loose)


def test_every_problem_is_listed_at_once(tree3):
    for p in (tree3 / "train" / "cat").iterdir():
        p.unlink()
    shutil.rmtree(tree3 / "test" / "horse")
    with pytest.raises(ImageDataError) as err:
        scan_folder(tree3)
    assert "train/cat holds no images" in str(err.value)
    assert "class 'horse' is in train/ but not in test/" in str(err.value)


def test_files_that_are_not_read_are_named(tree3):
    (tree3 / "train" / "cat" / "notes.txt").write_text("x")
    write_image(tree3 / "train" / "stray.jpg")
    with pytest.warns(ImageLayoutWarning) as caught:
        scan_folder(tree3)
    text = " ".join(str(w.message) for w in caught)
    assert "train/cat/notes.txt" in text and "train/stray.jpg" in text


def test_a_flat_tree_gets_a_seeded_stratified_split(tmp_path):
    root = make_tree(tmp_path / "flat", per_class=(10,), splits=())
    tree = scan_folder(root, test_fraction=0.3, split_seed=5)
    assert tree.layout == data.FLAT_LAYOUT
    assert tree.counts() == {"train": {c: 7 for c in CLASSES3}, "test": {c: 3 for c in CLASSES3}}
    same = scan_folder(root, test_fraction=0.3, split_seed=5)
    other = scan_folder(root, test_fraction=0.3, split_seed=6)
    assert same.files == tree.files and other.files != tree.files
    for cls in CLASSES3:  # disjoint and complete per class
        train, test = set(tree.files["train"][cls]), set(tree.files["test"][cls])
        assert not train & test and len(train | test) == 10
    assert tree.split["seed"] == 5 and tree.split["test_fraction"] == 0.3
    assert tree.split["test_files_sha1"] == same.split["test_files_sha1"] != other.split["test_files_sha1"]
    assert "split 70%/30% per class by seed 5" in tree.describe()
    # adding a class does not move the photos of the others
    make_tree(root, classes=("zebra",), per_class=(10,), splits=())
    bigger = scan_folder(root, test_fraction=0.3, split_seed=5)
    assert bigger.files["test"]["cat"] == tree.files["test"]["cat"]


def test_a_flat_class_too_small_to_split_is_named(tmp_path):
    root = make_tree(tmp_path / "flat", per_class=(3,), splits=())
    for p in list((root / "dog").iterdir())[1:]:
        p.unlink()
    with pytest.raises(ImageDataError, match=r"dog holds 1 image; a train/test split needs at least 2"):
        scan_folder(root)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", True])
def test_bad_test_fraction(tmp_path, bad):
    root = make_tree(tmp_path / "flat", per_class=(3,), splits=())
    with pytest.raises(ValueError, match="test_fraction must be a number between 0 and 1"):
        scan_folder(root, test_fraction=bad)


def test_the_hot_dog_set_is_one_instance(tiny_hotdog):
    tree = scan_folder(tiny_hotdog)
    assert tree.classes == data.CLASSES
    hot = data.HotdogImages(tiny_hotdog, "test", cache=False)
    gen = ImageFolder(tiny_hotdog, "test", cache=False)
    assert hot.synsets == gen.synsets and hot.items == gen.items
    assert data.HotdogDataError is ImageDataError


def test_load_data_folder_serves_n_classes(tree3):
    train_iter, test_iter = data.load_data_folder(tree3, 4, 16, 18, storage="memory")
    labels = onp.concatenate([y.asnumpy() for _, y in train_iter])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    X, y = next(iter(test_iter))
    assert tuple(X.shape) == (4, 3, 16, 16)


def test_setup_on_a_folder_records_classes_and_split(tmp_path):
    import d2l_helpers

    root = make_tree(tmp_path / "flat", per_class=(6,), splits=())
    run = d2l_helpers.setup(seed=3, profile="ci", backbone="efficientnet_lite0", data=root,
                            test_fraction=0.5, split_seed=1)
    assert run.classes == list(CLASSES3) and run.num_classes == 3
    meta = run.to_dict()
    assert meta["classes"] == list(CLASSES3) and meta["data_split"]["seed"] == 1
    assert meta["data_split"]["test_fraction"] == 0.5
    small = run.limit(train_per_class=2, test_per_class=1)
    assert len(small.images("train")) == 6 and len(small.images("test")) == 3
    assert small.profile.name == "ci" and "limited to 2 train / 1 test" in small.profile.description
    assert "a local folder" in str(run) and str(tmp_path) not in str(run).replace(str(root), "")


def test_per_class_accuracy_and_an_n_by_n_confusion_matrix():
    labels, preds = [0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 0, 2, 2]
    cm = predict.confusion_matrix(labels, preds, num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert predict.per_class_accuracy(cm).round(3).tolist() == [0.5, 1.0, 0.667]


def _save_n_class_run(name, classes, *, in_meta=True, in_config=False):
    import mxnet as mx

    from d2l_helpers.backbones import get_backbone
    from d2l_helpers.training import History

    net = get_backbone("efficientnet_lite0", pretrained=False, classes=len(classes))
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    config = {"profile": "ci", "backbone": "efficientnet_lite0"}
    if in_config:
        config["classes"] = list(classes)
    history = History(epoch=[1], train_loss=[1.0], train_acc=[0.5], test_acc=[0.5],
                      examples_per_sec=[1.0], seconds=[1.0], config=config)
    runs.save_run(name, history, net, meta={"classes": list(classes)} if in_meta else {})
    return net


@pytest.mark.parametrize("where", ["meta", "config"])
def test_load_classifier_returns_the_runs_class_names(where):
    classes = ("apple_pie", "baklava", "beignets", "bibimbap")
    _save_n_class_run("four", classes, in_meta=where == "meta", in_config=where == "config")
    net, tf, names, saved = runs.load_classifier("four")
    assert names == list(classes) and net.output._units == 4
    assert json.loads((saved.path / "history.json").read_text())["name"] == "four"


def test_load_classifier_of_an_older_hot_dog_run_keeps_the_two_names():
    _save_n_class_run("old", data.CLASSES, in_meta=False)
    assert runs.load_classifier("old")[2] == list(data.CLASSES)
