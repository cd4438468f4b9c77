"""Label files: accepted row forms, every problem, the bad-labels policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yogo.data.labels import (
    ClassLookup,
    apply_policy,
    load_label_studio_ids,
    parse_label_file,
    parse_label_text,
)
from yogo.errors import UserError

CLASSES = ClassLookup(("healthy", "ring", "troph"))


def parse(text: str, classes: ClassLookup = CLASSES):
    return parse_label_text(text, Path("l.txt"), classes)


@pytest.mark.parametrize(
    "text",
    [
        "1 0.5 0.5 0.1 0.2\n",
        "1,0.5,0.5,0.1,0.2\n",
        "1, 0.5, 0.5, 0.1, 0.2\n",
        "  1\t0.5  0.5 0.1 0.2  \r\n",
        "ring 0.5 0.5 0.1 0.2\n",
        "1.0 0.5 0.5 0.1 0.2",
        "class xc yc w h\n1 0.5 0.5 0.1 0.2\n",
        "label,x_center,y_center,width,height\n1,0.5,0.5,0.1,0.2\n",
        "\n\n1 0.5 0.5 0.1 0.2\n\n",
        "\ufeff1 0.5 0.5 0.1 0.2\n".encode().decode("utf-8-sig"),
    ],
)
def test_accepted_row_forms_give_one_box(text: str) -> None:
    parsed = parse(text)
    assert parsed.problems == ()
    np.testing.assert_allclose(parsed.boxes, [[1, 0.5, 0.5, 0.1, 0.2]])


@pytest.mark.parametrize("separator", [" ", ","])
def test_a_confidence_column_is_read_and_kept_with_its_row(separator: str) -> None:
    """What `yogo infer --save-preds` writes (class xc yc w h confidence) parses, mixed with
    rows a person wrote (no confidence: NaN), and the policy keeps rows and scores aligned."""
    text = "0 0.5 0.5 0.1 0.1 0.87\n1 0.2 0.2 0.1 0.1\n2 0.98 0.5 0.1 0.1 0.4\n"
    parsed = parse(text.replace(" ", separator))
    np.testing.assert_array_equal(parsed.confidence, [0.87, np.nan, 0.4])
    assert [p.kind for p in parsed.problems] == ["outside"]
    clipped = apply_policy(parsed, "clip")
    np.testing.assert_allclose(clipped.confidence, [0.87, np.nan, 0.4])
    dropped = apply_policy(parsed, "drop")
    assert dropped.lines.tolist() == [1, 2]
    np.testing.assert_allclose(dropped.confidence, [0.87, np.nan])
    clean = parse("0 0.5 0.5 0.1 0.1 0.87\n1 0.2 0.2 0.1 0.1 1\n")  # the fast path
    np.testing.assert_allclose(clean.confidence, [0.87, 1.0])
    assert parsed.boxes.shape == (3, 5) and clean.boxes.shape == (2, 5)


def test_one_row_file_keeps_its_object() -> None:
    # YOGO 1.0.1 read a one-row file as a 1-D array and dropped the object.
    assert len(parse("0 0.5 0.5 0.1 0.1").boxes) == 1


def test_empty_file_is_an_image_without_objects() -> None:
    parsed = parse("")
    assert parsed.boxes.shape == (0, 5) and parsed.problems == ()


def test_many_rows_keep_order_and_lines() -> None:
    parsed = parse("0 0.1 0.1 0.1 0.1\n\n2 0.9 0.9 0.1 0.1\nhealthy 0.5 0.5 0.2 0.2\n")
    assert parsed.boxes[:, 0].tolist() == [0, 2, 0]
    assert parsed.lines.tolist() == [1, 3, 4]


def test_header_only_file_is_empty() -> None:
    assert parse("class x y w h\n").boxes.shape == (0, 5)


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("3 0.5 0.5 0.1 0.1", "class", "l.txt:1: class 3 out of range 0..2"),
        ("-1 0.5 0.5 0.1 0.1", "class", "class -1 out of range 0..2"),
        ("1.5 0.5 0.5 0.1 0.1", "class", "class '1.5' is not an integer"),
        (
            "0 0.5 0.5 0.1 0.1\nhelthy 0.5 0.5 0.1 0.1",
            "class",
            "l.txt:2: unknown class name 'helthy'",
        ),
        ("helthy 0.5 0.5 0.1 0.1", "class", "unknown class name 'helthy'"),
        ("0 0.5 0.5 0.1", "columns", "expected 5 values (class xc yc w h) or 6"),
        ("0 0.5 0.5 0.1 0.1 0.9 1", "columns", "found 7"),
        ("0 0.5 0.5 0.1 0.1 1.2", "confidence", "confidence 1.2 is outside [0, 1]"),
        ("0 0.5 0.5 0.1 0.1 -0.1", "confidence", "confidence -0.1 is outside"),
        ("0 0.5 0.5 0.1 0.1 nan", "not-finite", "confidence is nan"),
        ("0 0.5 0.5 0.1 0.1 high", "not-a-number", "confidence 'high' is not a number"),
        ("0,0.5,,0.1,0.1", "not-a-number", "yc '' is not a number"),
        ("0 0.5 abc 0.1 0.1", "not-a-number", "yc 'abc' is not a number"),
        ("0 0.5 0.5 nan 0.1", "not-finite", "w is nan"),
        ("0 0.5 0.5 0.1 inf", "not-finite", "h is inf"),
        ("nan 0.5 0.5 0.1 0.1", "not-finite", "class is nan"),
        ("0 0.5 0.5 0 0.1", "size", "width and height must be > 0, got w=0 h=0.1"),
        ("0 0.5 0.5 0.1 -0.2", "size", "w=0.1 h=-0.2"),
        ("0 1.2 0.5 0.1 0.1", "centre", "box centre (1.2, 0.5) is outside the image"),
        ("0 0.5 -0.01 0.1 0.1", "centre", "outside the image [0, 1]"),
        ("0 0.02 0.5 0.1 0.1", "outside", "box extends 0.0300 outside the image"),
        ("0 0.5 0.96 0.1 0.1", "outside", "box extends 0.0100 outside"),
    ],
)
def test_every_row_problem_is_found_with_its_line(text: str, kind: str, message: str) -> None:
    parsed = parse(text)
    problem = parsed.problems[-1]
    assert problem.kind == kind and problem.severity == "error"
    assert message in str(problem)
    assert problem.line == text.count("\n") + 1


def test_box_within_edge_tolerance_is_accepted_and_clipped() -> None:
    parsed = parse("0 0.0498 0.5 0.1 0.1")  # 0.0002 outside: exporter rounding
    assert parsed.problems == ()
    result = apply_policy(parsed, "error")
    x0 = result.boxes[0, 1] - result.boxes[0, 3] / 2
    assert x0 >= 0 and result.boxes[0, 3] == pytest.approx(0.0998, abs=1e-6)


def test_unreadable_label_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    parsed = parse_label_file(path, CLASSES)
    assert parsed.problems[0].kind == "unreadable-label"
    assert "not UTF-8 text" in str(parsed.problems[0])


BAD = "\n".join(
    [
        "0 0.5 0.5 0.1 0.1",  # 1 good
        "7 0.5 0.5 0.1 0.1",  # 2 class out of range: unfixable
        "0 0.98 0.5 0.1 0.1",  # 3 sticks out: clippable
        "0 1.02 0.5 0.1 0.1",  # 4 centre outside, still overlaps: clippable
        "0 1.3 0.5 0.1 0.1",  # 5 centre outside, nothing inside: dropped after clipping
        "0 0.5 0.5 0 0.1",  # 6 zero width: unfixable
    ]
)


def test_policy_error_reports_and_keeps_only_good_rows() -> None:
    result = apply_policy(parse(BAD), "error")
    assert [p.line for p in result.problems] == [2, 3, 4, 5, 6]
    assert all(p.action is None for p in result.problems)
    assert result.lines.tolist() == [1]


def test_policy_drop_drops_every_bad_row() -> None:
    result = apply_policy(parse(BAD), "drop")
    assert result.lines.tolist() == [1]
    assert {p.action for p in result.problems} == {"dropped row"}


def test_policy_clip_repairs_what_it_can() -> None:
    result = apply_policy(parse(BAD), "clip")
    assert result.lines.tolist() == [1, 3, 4]
    actions = {p.line: p.action for p in result.problems}
    assert actions == {
        2: "dropped row",
        3: "clipped",
        4: "clipped",
        5: "dropped row: nothing left inside the image",
        6: "dropped row",
    }
    boxes = result.boxes
    assert boxes.dtype == np.float32
    assert np.all(boxes[:, 1] + boxes[:, 3] / 2 <= 1 + 1e-6)
    np.testing.assert_allclose(boxes[1], [0, 0.965, 0.5, 0.07, 0.1], atol=1e-6)
    np.testing.assert_allclose(boxes[2], [0, 0.985, 0.5, 0.03, 0.1], atol=1e-6)


def test_unknown_policy_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown bad-labels policy"):
        apply_policy(parse(""), "ignore")


def write_notes(folder: Path, categories: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.json").write_text(json.dumps({"categories": categories, "info": {}}))


def test_label_studio_ids_map_through_names(tmp_path: Path) -> None:
    write_notes(tmp_path, [{"id": 0, "name": "troph"}, {"id": 1, "name": "healthy"}])
    ids = load_label_studio_ids(tmp_path / "labels")
    lookup = ClassLookup(CLASSES.class_names, ids)
    parsed = parse("0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1 0.1\nring 0.5 0.5 0.1 0.1", lookup)
    assert parsed.boxes[:, 0].tolist() == [2, 0, 1]


def test_label_studio_unknown_id_and_unknown_name(tmp_path: Path) -> None:
    write_notes(tmp_path, [{"id": 0, "name": "gametocyte"}])
    lookup = ClassLookup(CLASSES.class_names, load_label_studio_ids(tmp_path / "labels"))
    parsed = parse("0 0.5 0.5 0.1 0.1\n4 0.5 0.5 0.1 0.1", lookup)
    assert "class id 0 is 'gametocyte' in notes.json, not one of class_names" in str(
        parsed.problems[0]
    )
    assert "l.txt:2: class id 4 is not in notes.json" in str(parsed.problems[1])


def test_no_notes_file_means_plain_indices(tmp_path: Path) -> None:
    assert load_label_studio_ids(tmp_path / "labels") is None


def test_malformed_notes_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text('{"categories": [{"name": "x"}]}')
    with pytest.raises(UserError, match="not a Label Studio notes file") as info:
        load_label_studio_ids(tmp_path / "labels")
    assert "notes.json" in str(info.value)


def test_fast_path_and_row_parser_agree_on_random_files() -> None:
    from yogo.data.labels import _parse_rows

    tokens = [
        "0",
        "1",
        "2",
        "3",
        "01",
        "+1",
        "1.0",
        "1e0",
        "ring",
        "0.5",
        "0.05",
        "0.1",
        "1",
        "0",
        "-0.1",
        "1.2",
        "nan",
        "inf",
        "1_0",
        "0x1",
        "",
        "0.5e0",
        ".5",
        "5.",
    ]
    rng = np.random.default_rng(0)
    for _ in range(3000):
        rows = []
        for _ in range(int(rng.integers(0, 4))):
            if rng.random() < 0.7:  # mostly plausible rows, so both outcomes are common
                row = [
                    str(rng.integers(0, 3)),
                    *(f"{v:.3f}" for v in rng.uniform(0.05, 0.95, 2)),
                    *(f"{v:.3f}" for v in rng.uniform(0.01, 0.1, 2)),
                ]
                if rng.random() < 0.3:  # a confidence column (all rows or some)
                    row.append(f"{rng.uniform(-0.05, 1.05):.3f}")
                if rng.random() < 0.3:
                    row[int(rng.integers(0, 5))] = str(rng.choice(tokens))
            else:
                row = [str(t) for t in rng.choice(tokens, size=int(rng.integers(3, 7)))]
            rows.append(" ".join(row))
        text = "\n".join(rows) + ("\n" if rng.random() < 0.5 else "")
        fast, exact = parse(text), _parse_rows(text, Path("l.txt"), CLASSES)
        np.testing.assert_array_equal(fast.boxes, exact.boxes, err_msg=text)
        np.testing.assert_array_equal(fast.lines, exact.lines, err_msg=text)
        np.testing.assert_array_equal(fast.confidence, exact.confidence, err_msg=text)
        assert fast.problems == exact.problems, text
