"""Dataset definition files: every rule, with the message a user would read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_folder_pair, simple_ddf, write_yaml

from yogo import DatasetDefinition
from yogo.ddf import SplitFractions, split_counts
from yogo.errors import UserError


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages name files relative to the working directory: keep them short here."""
    monkeypatch.chdir(tmp_path)


def load_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(UserError) as info:
        DatasetDefinition.from_yaml(path, **kwargs)
    return str(info.value)


def stems(samples: tuple) -> list[str]:
    return [s.label.stem for s in samples]


PAIR = "{image_path: set/images, label_path: set/labels}"


def test_minimal_ddf_is_all_train(tmp_path: Path) -> None:
    ddf = DatasetDefinition.from_yaml(simple_ddf(tmp_path, n=5))
    assert ddf.class_names == ("a", "b")
    assert ddf.split_fractions == SplitFractions(1.0, 0.0, 0.0)
    assert stems(ddf.splits["train"]) == [f"s{i:03d}" for i in range(5)]
    assert ddf.splits["val"] == () and ddf.splits["test"] == ()
    assert [p.label_path for p in ddf.dataset_paths] == [(tmp_path / "set/labels").resolve()]
    assert ddf.test_paths == ()
    assert all(s.image is not None and s.image.suffix == ".png" for s in ddf.samples)


def test_class_names_stay_text_as_written(tmp_path: Path) -> None:
    ddf = DatasetDefinition.from_yaml(simple_ddf(tmp_path, classes="[07, 1.0, yes, null-ish]"))
    assert ddf.class_names == ("07", "1.0", "yes", "null-ish")


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        ("[]", "class_names must be a non-empty list"),
        ("a", "class_names must be a non-empty list, got text"),
        ("[a, a]", "class name 'a' is listed twice"),
        ("[a, null]", "each class name must be a non-empty text value"),
    ],
)
def test_bad_class_names(tmp_path: Path, classes: str, expected: str) -> None:
    message = load_error(simple_ddf(tmp_path, classes=classes))
    assert expected in message
    assert "ddf.yml:1:" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("class_names: []\n", "ddf.yml:1: class_names must be a non-empty list, got an empty list"),
        (
            "class_names: [a]\ndataset_paths: []\n",
            "ddf.yml:2: dataset_paths must be a mapping (key: value lines), got an empty list",
        ),
        ("class_names: {}\n", "class_names must be a non-empty list, got an empty mapping"),
    ],
)
def test_empty_values_are_named_as_such(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in load_error(write_yaml(tmp_path / "ddf.yml", body))


def test_a_folder_named_like_a_label_file_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = simple_ddf(tmp_path, n=2)
    (tmp_path / "set/labels/extra.txt").mkdir()
    ddf = DatasetDefinition.from_yaml(path)
    expected = "set/labels/extra.txt: named like a label file but is a folder; not used"
    assert ddf.warnings == (expected,) and expected in caplog.text
    assert len(ddf.samples) == 2


def test_class_names_required(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    path = write_yaml(tmp_path / "d.yml", f"dataset_paths: {{one: {PAIR}}}\n")
    assert "class_names is required" in load_error(path)


def test_unknown_top_key_suggests_test_paths(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    path = write_yaml(
        tmp_path / "d.yml",
        f"""
        class_names: [a]
        dataset_paths: {{one: {PAIR}}}
        test_dataset_paths: {{two: {PAIR}}}
        """,
    )
    message = load_error(path)
    assert "d.yml:3: unknown key 'test_dataset_paths'" in message
    assert "did you mean 'test_paths'?" in message


def test_unknown_spec_key_suggests_close_match(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    path = write_yaml(
        tmp_path / "d.yml",
        """
        class_names: [a]
        dataset_paths:
          one:
            image_pth: set/images
            label_path: set/labels
        """,
    )
    message = load_error(path)
    assert "d.yml:4: unknown key 'image_pth' in dataset_paths.one" in message
    assert "did you mean 'image_path'?" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("class_names: &names [a]\n", "d.yml:1: YAML anchor '&names' is not allowed"),
        ("x: &n [a]\nclass_names: *n\n", "YAML anchor"),
        ("class_names: [a]\nclass_names: [b]\n", "d.yml:2: duplicate key 'class_names'"),
        ("class_names: !!python/list [a]\n", "d.yml:1: YAML tag"),
        ("class_names: [a\n", "invalid YAML"),
        ("", "file is empty"),
        ("- a\n- b\n", "must be a mapping"),
        ("class_names: [a]\n---\nclass_names: [a]\n", "more than one YAML document"),
    ],
)
def test_yaml_constructs_refused(tmp_path: Path, body: str, expected: str) -> None:
    message = load_error(write_yaml(tmp_path / "d.yml", body))
    assert expected in message


def test_alias_refused_even_without_anchor_problem(tmp_path: Path) -> None:
    # An alias whose anchor sits in a value we would otherwise ignore still names the alias line.
    from yogo.yamlfile import load_yaml

    path = write_yaml(tmp_path / "d.yml", "a: [x]\nb: *missing\n")
    with pytest.raises(UserError, match=r"d\.yml:2"):
        load_yaml(path)


def test_missing_ddf_file(tmp_path: Path) -> None:
    assert "does not exist" in load_error(tmp_path / "nope.yml")


def test_paths_are_relative_to_the_yaml_file(tmp_path: Path, monkeypatch) -> None:
    simple_ddf(tmp_path / "project", n=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ddf = DatasetDefinition.from_yaml(Path("../project/ddf.yml"))
    assert len(ddf.samples) == 2
    assert ddf.warnings == ()


def test_working_directory_fallback_warns(tmp_path: Path, monkeypatch, caplog) -> None:
    make_folder_pair(tmp_path / "data", {"x": "0 0.5 0.5 0.1 0.1"})
    path = write_yaml(
        tmp_path / "defs" / "d.yml",
        """
        class_names: [a]
        dataset_paths:
          one: {image_path: data/images, label_path: data/labels}
        """,
    )
    monkeypatch.chdir(tmp_path)
    ddf = DatasetDefinition.from_yaml(path)
    assert len(ddf.samples) == 1
    assert len(ddf.warnings) == 2  # image_path and label_path
    assert "relative to the working directory" in ddf.warnings[0]
    assert "defs/d.yml:3" in ddf.warnings[0]
    assert "relative to the working directory" in caplog.text


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ("{image_path: set/images, label_path: nowhere}", "label_path 'nowhere' does not exist"),
        ("{image_path: nowhere, label_path: set/labels}", "image_path 'nowhere' does not exist"),
        (
            "{image_path: set/images/a.png, label_path: set/labels}",
            "image_path 'set/images/a.png' is a file, not a folder",
        ),
        ("{image_path: set/images, label_path: set/labels/a.txt}", "is a file, not a folder"),
        ("{image_path: set/images}", "dataset_paths.one needs label_path"),
        ("{image_path: set/images, label_path: set/labels, defn_path: x.yml}", "has both"),
        ("{defn_path: missing.yml}", "defn_path 'missing.yml' does not exist"),
        ("{defn_path: set}", "defn_path 'set' is a folder, not a YAML file"),
        ("[set/images, set/labels]", "dataset_paths.one must be a mapping"),
    ],
)
def test_bad_folder_pairs(tmp_path: Path, pair: str, expected: str) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a]\ndataset_paths:\n  one: {pair}\n")
    message = load_error(path)
    assert expected in message
    assert "d.yml:3" in message


def test_label_folder_without_label_files(tmp_path: Path) -> None:
    (tmp_path / "set/images").mkdir(parents=True)
    (tmp_path / "set/labels").mkdir(parents=True)
    (tmp_path / "set/labels/readme.md").write_text("not a label")
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a]\ndataset_paths:\n  one: {PAIR}\n")
    message = load_error(path)
    assert "d.yml:3: label_path of dataset_paths.one" in message
    assert "holds no label files" in message


def test_empty_or_missing_sections(tmp_path: Path) -> None:
    assert "dataset_paths is empty" in load_error(
        write_yaml(tmp_path / "a.yml", "class_names: [a]\ndataset_paths: {}\n")
    )
    assert "needs dataset_paths" in load_error(write_yaml(tmp_path / "b.yml", "class_names: [a]\n"))


# --- includes ------------------------------------------------------------------------------


def child_ddf(path: Path, data: str, classes: str = "[a, b]", extra: str = "") -> Path:
    """A DDF at `path` listing one folder pair made under `path.parent / data`."""
    make_folder_pair(path.parent / data, {f"{data}_{i}": "0 0.5 0.5 0.1 0.1" for i in range(3)})
    return write_yaml(
        path,
        f"class_names: {classes}\n"
        f"dataset_paths:\n  {data}: {{image_path: {data}/images, label_path: {data}/labels}}\n"
        + extra,
    )


def test_include_resolves_relative_to_including_file(tmp_path: Path) -> None:
    child_ddf(tmp_path / "sub" / "child.yml", "c1")
    top = write_yaml(
        tmp_path / "top.yml",
        "class_names: [a, b]\ndataset_paths:\n  inc: {defn_path: sub/child.yml}\n",
    )
    ddf = DatasetDefinition.from_yaml(top)
    assert stems(ddf.splits["train"]) == ["c1_0", "c1_1", "c1_2"]
    pair = ddf.dataset_paths[0]  # where messages about this pair point
    assert (pair.source.name, pair.line, pair.name) == ("child.yml", 3, "dataset_paths.c1")


def test_included_class_names_must_match(tmp_path: Path) -> None:
    child_ddf(tmp_path / "child.yml", "c1", classes="[b, a]")
    top = write_yaml(
        tmp_path / "top.yml", "class_names: [a, b]\ndataset_paths:\n  inc: {defn_path: child.yml}\n"
    )
    message = load_error(top)
    assert "child.yml:1: class_names differ from top.yml" in message
    assert "[b, a] here, [a, b] there" in message


def test_include_cycle_prints_the_chain(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "a.yml", "class_names: [a]\ndataset_paths:\n  b: {defn_path: b.yml}\n")
    write_yaml(tmp_path / "b.yml", "class_names: [a]\ndataset_paths:\n  a: {defn_path: a.yml}\n")
    message = load_error(Path("a.yml"))
    assert message.startswith("b.yml:3: include cycle: a.yml -> b.yml -> a.yml")


def test_cycle_through_dotdot_and_symlink_is_found(tmp_path: Path) -> None:
    (tmp_path / "defs" / "sub").mkdir(parents=True)
    (tmp_path / "defs" / "alias").symlink_to(tmp_path / "defs", target_is_directory=True)
    write_yaml(
        tmp_path / "defs" / "a.yml",
        "class_names: [a]\ndataset_paths:\n  b: {defn_path: sub/../sub/b.yml}\n",
    )
    write_yaml(
        tmp_path / "defs" / "sub" / "b.yml",
        "class_names: [a]\ndataset_paths:\n  a: {defn_path: ../alias/a.yml}\n",
    )
    message = load_error(tmp_path / "defs" / "a.yml")
    assert "include cycle:" in message
    assert message.count("a.yml") >= 2 and "sub/b.yml" in message


def test_self_include_through_symlinked_file(tmp_path: Path) -> None:
    write_yaml(
        tmp_path / "a.yml", "class_names: [a]\ndataset_paths:\n  me: {defn_path: link.yml}\n"
    )
    (tmp_path / "link.yml").symlink_to(tmp_path / "a.yml")
    assert "include cycle:" in load_error(tmp_path / "a.yml")


def test_same_folder_pair_twice_names_both_places(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    path = write_yaml(
        tmp_path / "d.yml",
        """
        class_names: [a]
        dataset_paths:
          one: {image_path: set/images, label_path: set/labels}
          two: {image_path: ./set/../set/images, label_path: set/labels/}
        """,
    )
    message = load_error(path)
    assert "is listed twice" in message
    assert "d.yml:3 (dataset_paths.one)" in message and "d.yml:4 (dataset_paths.two)" in message


def test_same_folder_pair_through_an_include(tmp_path: Path) -> None:
    child_ddf(tmp_path / "child.yml", "c1")
    top = write_yaml(
        tmp_path / "top.yml",
        """
        class_names: [a, b]
        dataset_paths:
          inc: {defn_path: child.yml}
          direct: {image_path: c1/images, label_path: c1/labels}
        """,
    )
    message = load_error(top)
    assert (
        "child.yml:3 (dataset_paths.c1)" in message
        and "top.yml:4 (dataset_paths.direct)" in message
    )


def test_diamond_include_is_refused(tmp_path: Path) -> None:
    child_ddf(tmp_path / "leaf.yml", "leaf")
    for mid in ("m1", "m2"):
        write_yaml(
            tmp_path / f"{mid}.yml",
            "class_names: [a, b]\ndataset_paths:\n  leaf: {defn_path: leaf.yml}\n",
        )
    top = write_yaml(
        tmp_path / "top.yml",
        "class_names: [a, b]\ndataset_paths:\n  x: {defn_path: m1.yml}\n  y: {defn_path: m2.yml}\n",
    )
    message = load_error(top)
    assert "leaf.yml is included twice" in message
    assert "m1.yml:3" in message and "m2.yml:3" in message


def mixed_child(tmp_path: Path) -> Path:
    """A child with both dataset_paths (c_pool) and test_paths (c_test)."""
    for name in ("c_pool", "c_test"):
        make_folder_pair(tmp_path / name, {f"{name}_{i}": "1 0.5 0.5 0.1 0.1" for i in range(2)})
    return write_yaml(
        tmp_path / "child.yml",
        """
        class_names: [a, b]
        dataset_paths:
          pool: {image_path: c_pool/images, label_path: c_pool/labels}
        test_paths:
          held: {image_path: c_test/images, label_path: c_test/labels}
        """,
    )


def test_with_top_level_test_paths_includes_contribute_by_section(tmp_path: Path) -> None:
    mixed_child(tmp_path)
    top = write_yaml(
        tmp_path / "top.yml",
        """
        class_names: [a, b]
        dataset_paths:
          inc: {defn_path: child.yml}
        test_paths:
          inc: {defn_path: child.yml}
        """,
    )
    ddf = DatasetDefinition.from_yaml(top)
    assert stems(ddf.splits["train"]) == ["c_pool_0", "c_pool_1"]
    assert stems(ddf.splits["test"]) == ["c_test_0", "c_test_1"]


def test_with_top_level_test_paths_child_test_paths_stay_out_of_the_pool(tmp_path: Path) -> None:
    mixed_child(tmp_path)
    make_folder_pair(tmp_path / "t", {"t_0": ""})
    top = write_yaml(
        tmp_path / "top.yml",
        """
        class_names: [a, b]
        dataset_paths:
          inc: {defn_path: child.yml}
        test_paths:
          own: {image_path: t/images, label_path: t/labels}
        """,
    )
    ddf = DatasetDefinition.from_yaml(top)
    assert stems(ddf.splits["train"]) == ["c_pool_0", "c_pool_1"]
    assert stems(ddf.splits["test"]) == ["t_0"]


def test_without_top_level_test_paths_everything_joins_the_pool(tmp_path: Path) -> None:
    mixed_child(tmp_path)
    top = write_yaml(
        tmp_path / "top.yml", "class_names: [a, b]\ndataset_paths:\n  inc: {defn_path: child.yml}\n"
    )
    ddf = DatasetDefinition.from_yaml(top)
    assert stems(ddf.splits["train"]) == ["c_pool_0", "c_pool_1", "c_test_0", "c_test_1"]
    assert ddf.splits["test"] == ()


def test_include_under_test_paths_without_test_paths_is_an_error(tmp_path: Path) -> None:
    child_ddf(tmp_path / "child.yml", "c1")
    make_folder_pair(tmp_path / "p", {"p0": ""})
    top = write_yaml(
        tmp_path / "top.yml",
        """
        class_names: [a, b]
        dataset_paths:
          own: {image_path: p/images, label_path: p/labels}
        test_paths:
          inc: {defn_path: child.yml}
        """,
    )
    message = load_error(top)
    assert "child.yml is included under test_paths but has no test_paths of its own" in message
    assert "top.yml:5" in message


def test_same_data_in_pool_and_test_is_refused(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    path = write_yaml(
        tmp_path / "d.yml",
        f"class_names: [a]\ndataset_paths: {{x: {PAIR}}}\ntest_paths: {{y: {PAIR}}}\n",
    )
    assert "is listed twice" in load_error(path)


def test_included_thumbnails_are_reported_not_used(tmp_path: Path) -> None:
    (tmp_path / "thumbs").mkdir()
    child_ddf(tmp_path / "child.yml", "c1", extra="thumbnail_augmentation: {a: thumbs}\n")
    top = write_yaml(
        tmp_path / "top.yml", "class_names: [a, b]\ndataset_paths:\n  inc: {defn_path: child.yml}\n"
    )
    ddf = DatasetDefinition.from_yaml(top)
    assert ddf.thumbnail_augmentation == {}
    assert any("child.yml:4: thumbnail_augmentation of an included file" in w for w in ddf.warnings)


# --- thumbnails ----------------------------------------------------------------------------


def test_thumbnail_augmentation(tmp_path: Path) -> None:
    for name in ("t1", "t2", "t3"):
        (tmp_path / name).mkdir()
    path = simple_ddf(tmp_path, n=2)
    path.write_text(path.read_text() + "thumbnail_augmentation:\n  a: t1\n  b: [t2, t3]\n")
    ddf = DatasetDefinition.from_yaml(path)
    assert ddf.thumbnail_augmentation == {
        "a": ((tmp_path / "t1").resolve(),),
        "b": ((tmp_path / "t2").resolve(), (tmp_path / "t3").resolve()),
    }


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("bb: t1", "thumbnail_augmentation key 'bb' is not a class name"),
        ("a: missing", "thumbnail folder 'missing' does not exist"),
        ("a: ddf.yml", "thumbnail folder 'ddf.yml' is a file, not a folder"),
    ],
)
def test_bad_thumbnail_augmentation(tmp_path: Path, entry: str, expected: str) -> None:
    (tmp_path / "t1").mkdir()
    path = simple_ddf(tmp_path, n=2)
    path.write_text(path.read_text() + f"thumbnail_augmentation:\n  {entry}\n")
    message = load_error(path)
    assert expected in message and "ddf.yml:8" in message


# --- split fractions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fractions", "expected"),
    [
        ("{train: 0.8, val: 0.3}", "must sum to 1, got train 0.8 + val 0.3 = 1.1"),
        ("{train: 1.2, val: -0.2}", "dataset_split_fractions.train must be a number in [0, 1]"),
        ("{train: lots, val: 0}", "must be a number in [0, 1], got 'lots'"),
        ("{train: .nan, val: 0}", "must be a number in [0, 1]"),
        ("{train: 1}", "dataset_split_fractions needs val"),
        ("{train: 0.8, validation: 0.2}", "unknown split 'validation'"),
        ("[0.8, 0.2]", "dataset_split_fractions must be a mapping"),
    ],
)
def test_bad_split_fractions(tmp_path: Path, fractions: str, expected: str) -> None:
    message = load_error(simple_ddf(tmp_path, fractions=f"dataset_split_fractions: {fractions}"))
    assert expected in message
    assert "ddf.yml:2" in message


def test_test_fraction_not_allowed_with_test_paths(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    make_folder_pair(tmp_path / "t", {"b": ""})
    path = write_yaml(
        tmp_path / "d.yml",
        f"""
        class_names: [a]
        dataset_split_fractions: {{train: 0.8, val: 0.1, test: 0.1}}
        dataset_paths: {{x: {PAIR}}}
        test_paths: {{y: {{image_path: t/images, label_path: t/labels}}}}
        """,
    )
    message = load_error(path)
    assert "d.yml:2: dataset_split_fractions has 'test'" in message


def test_fractions_within_tolerance_and_zero_splits(tmp_path: Path) -> None:
    path = simple_ddf(
        tmp_path, n=10, fractions="dataset_split_fractions: {train: 0.7, val: 0.2, test: 0.1}"
    )
    ddf = DatasetDefinition.from_yaml(path)  # 0.7 + 0.2 + 0.1 != 1.0 exactly in binary
    assert [len(ddf.splits[s]) for s in ("train", "val", "test")] == [7, 2, 1]
    path.write_text(path.read_text().replace("val: 0.2, test: 0.1", "val: 0.3, test: 0"))
    ddf = DatasetDefinition.from_yaml(path)
    assert [len(ddf.splits[s]) for s in ("train", "val", "test")] == [7, 3, 0]


@pytest.mark.parametrize("total", [0, 1, 2, 3, 7, 10, 101])
@pytest.mark.parametrize(
    "fractions",
    [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.5, 0), (0.7, 0.2, 0.1), (0.34, 0.33, 0.33)],
)
def test_split_counts_sum_and_respect_zero(total: int, fractions: tuple[float, ...]) -> None:
    counts = split_counts(total, SplitFractions(*fractions))
    assert sum(counts) == total and min(counts) >= 0
    for count, fraction in zip(counts, fractions, strict=True):
        assert (count == 0) if fraction == 0 else abs(count - fraction * total) < 1


def test_split_is_independent_of_listing_order(tmp_path: Path, monkeypatch) -> None:
    path = simple_ddf(tmp_path, n=40, fractions="dataset_split_fractions: {train: 0.5, val: 0.5}")
    first = DatasetDefinition.from_yaml(path).splits
    real_scandir = os.scandir

    class Reversed:
        def __init__(self, folder: object) -> None:
            self.entries = sorted(real_scandir(folder), key=lambda e: e.name, reverse=True)

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *args: object) -> None:
            pass

        def __iter__(self):
            return iter(self.entries)

    monkeypatch.setattr(os, "scandir", Reversed)
    assert DatasetDefinition.from_yaml(path).splits == first


SPLIT_SCRIPT = """
import json, sys
from yogo import DatasetDefinition
ddf = DatasetDefinition.from_yaml(sys.argv[1])
print(json.dumps({k: [s.label.name for s in v] for k, v in ddf.splits.items()}))
"""


@pytest.mark.slow
def test_split_is_the_same_in_every_process_whatever_the_hash_seed(tmp_path: Path) -> None:
    path = simple_ddf(
        tmp_path, n=60, fractions="dataset_split_fractions: {train: 0.6, val: 0.2, test: 0.2}"
    )
    results = []
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", SPLIT_SCRIPT, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(out))
    assert results[0] == results[1] == results[2]
    assert [len(results[0][s]) for s in ("train", "val", "test")] == [36, 12, 12]


def test_split_follows_the_data_when_moved_with_its_ddf(tmp_path: Path) -> None:
    fractions = "dataset_split_fractions: {train: 0.5, val: 0.5}"
    one = DatasetDefinition.from_yaml(simple_ddf(tmp_path / "one", n=30, fractions=fractions))
    two = DatasetDefinition.from_yaml(simple_ddf(tmp_path / "x" / "two", n=30, fractions=fractions))
    assert stems(one.splits["val"]) == stems(two.splits["val"])


def test_adding_a_file_moves_few_samples(tmp_path: Path) -> None:
    fractions = "dataset_split_fractions: {train: 0.8, val: 0.2}"
    path = simple_ddf(tmp_path, n=100, fractions=fractions)
    before = set(stems(DatasetDefinition.from_yaml(path).splits["val"]))
    make_folder_pair(tmp_path / "set", {"zz_new": "0 0.5 0.5 0.1 0.1"})
    after = set(stems(DatasetDefinition.from_yaml(path).splits["val"]))
    assert len(before - after) <= 1


def test_split_override_resplits_everything_including_test_paths(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {f"p{i}": "" for i in range(8)})
    make_folder_pair(tmp_path / "t", {f"t{i}": "" for i in range(2)})
    path = write_yaml(
        tmp_path / "d.yml",
        f"""
        class_names: [a]
        dataset_split_fractions: {{train: 1, val: 0}}
        dataset_paths: {{x: {PAIR}}}
        test_paths: {{y: {{image_path: t/images, label_path: t/labels}}}}
        """,
    )
    plain = DatasetDefinition.from_yaml(path)
    assert stems(plain.splits["test"]) == ["t0", "t1"]
    over = DatasetDefinition.from_yaml(path, split_override=(0.5, 0.3, 0.2))
    assert [len(over.splits[s]) for s in ("train", "val", "test")] == [5, 3, 2]
    assert over.split_fractions == SplitFractions(0.5, 0.3, 0.2)
    assert sorted(stems(over.samples)) == sorted(stems(plain.samples))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ((0.5, 0.5, 0.5), "--dataset-split-override: fractions must sum to 1"),
        ((1.5, -0.5, 0), "--dataset-split-override: train must be in [0, 1]"),
        ((0.5, 0.5), "takes three fractions"),
    ],
)
def test_bad_split_override(tmp_path: Path, override: tuple[float, ...], expected: str) -> None:
    assert expected in load_error(simple_ddf(tmp_path), split_override=override)


def test_labels_without_images_are_listed_with_no_image(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": "", "b": ""}, images=["a", "extra"])
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a]\ndataset_paths: {{x: {PAIR}}}\n")
    ddf = DatasetDefinition.from_yaml(path)
    assert [(s.label.stem, s.image is not None) for s in ddf.samples] == [("a", True), ("b", False)]
    assert [p.name for p in ddf.unlabelled_images] == ["extra.png"]


def folds_ddf(root: Path, sizes: dict[str, int], specimens: dict[str, str] | None = None) -> Path:
    """A DDF with one folder pair per entry of `sizes` (name -> label files), `specimen:`
    keys from `specimens`, and a test_paths pair."""
    entries = []
    for name, n in sizes.items():
        make_folder_pair(root / name, {f"{name}_{i}": "0 0.5 0.5 0.2 0.2\n" for i in range(n)})
        specimen = f"\n    specimen: {specimens[name]}" if name in (specimens or {}) else ""
        folders = f"\n    image_path: {name}/images\n    label_path: {name}/labels"
        entries.append(f"  {name}:{folders}{specimen}")
    make_folder_pair(root / "held", {"held_0": "0 0.5 0.5 0.2 0.2\n"})
    text = "class_names: [a, b]\ndataset_paths:\n" + "\n".join(entries)
    text += "\ntest_paths:\n  held:\n    image_path: held/images\n    label_path: held/labels\n"
    path = root / "ddf.yml"
    path.write_text(text)
    return path


def test_folds_never_split_a_specimen_and_cover_every_frame_once(tmp_path: Path) -> None:
    sizes = {"run1": 6, "run2": 5, "run3": 4, "run4": 3, "run5": 2}
    ddf = folds_ddf(tmp_path, sizes, specimens={"run4": "patient7", "run5": "patient7"})
    vals = []
    for fold in range(3):
        d = DatasetDefinition.from_yaml(ddf, folds=(3, fold))
        train, val = ({s.label.parent.parent.name for s in d.splits[k]} for k in ("train", "val"))
        assert not train & val and train | val == set(sizes)
        assert {"run4", "run5"} <= train or {"run4", "run5"} <= val  # one specimen, one side
        assert [s.label.name for s in d.splits["test"]] == ["held_0.txt"]  # test_paths alone
        vals.append(val)
        assert d.splits == DatasetDefinition.from_yaml(ddf, folds=(3, fold)).splits  # stable
    assert set().union(*vals) == set(sizes) and sum(map(len, vals)) == len(sizes)
    # Largest specimen first into the emptiest fold: run1 (6), run2 (5), patient7 (5), then
    # run3 (4) into the lower of the two folds of 5.
    assert vals == [{"run1"}, {"run2", "run3"}, {"run4", "run5"}]


def test_more_folds_than_specimens_and_bad_specimen_keys_are_refused(tmp_path: Path) -> None:
    ddf = folds_ddf(tmp_path, {"run1": 2, "run2": 2, "run3": 2}, {"run2": "s", "run3": "s"})
    with pytest.raises(UserError) as raised:
        DatasetDefinition.from_yaml(ddf, folds=(3, 0))
    message = str(raised.value)
    assert "--folds 3 needs at least 3 specimens" in message and "holds 2" in message
    assert "--folds 2 or fewer" in message
    included = write_yaml(
        tmp_path / "outer.yml",
        """
        class_names: [a, b]
        dataset_paths:
          inner:
            defn_path: ddf.yml
            specimen: s
        """,
    )
    with pytest.raises(UserError, match="put specimen: on the folder pairs"):
        DatasetDefinition.from_yaml(included)
