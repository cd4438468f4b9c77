"""Checkpoints: round trip, atomic writes, refusing truncated and malicious files."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
from conftest import model_config, simple_ddf

from yogo.errors import UserError
from yogo.model.checkpoint import checkpoint_payload, load_checkpoint, load_model, save_checkpoint
from yogo.model.network import build_model

CONFIG = dataclasses.replace(
    model_config("half_filters", 2, anchor_w=0.05, anchor_h=0.07), class_names=("a", "b")
)


def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    path = tmp_path / "m.pth"
    save_checkpoint(path, checkpoint_payload(model, epoch=3, config={"ddf": "x.yml"}))
    return path, model


def test_round_trip(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    loaded, info = load_model(path)
    assert info == CONFIG
    images = torch.randint(0, 255, (1, 1, 64, 96), dtype=torch.uint8)
    model.eval()
    torch.testing.assert_close(loaded(images), model(images))
    checkpoint = load_checkpoint(path)
    assert checkpoint.payload["epoch"] == 3 and checkpoint.source == "yogo"
    assert not list(tmp_path.glob(".*partial"))


def test_plain_data_loads_with_weights_only(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "yogo-checkpoint" and payload["model"]["class_names"] == ["a", "b"]


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


class Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path("/tmp/yogo-pwned"),))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = Path("/tmp/yogo-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    torch.save({"format": "yogo-checkpoint", "x": Payload()}, path)
    with pytest.raises(UserError, match="refused: the file contains objects that could run code"):
        load_checkpoint(path)
    assert not marker.exists()
    plain_pickle = tmp_path / "evil2.pth"
    plain_pickle.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError):
        load_checkpoint(plain_pickle)
    assert not marker.exists()


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pth")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="unknown layout"):
        load_checkpoint(tmp_path / "other.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="not a dictionary"):
        load_checkpoint(tmp_path / "list.pth")


def test_newer_version_is_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(UserError, match="newer yogo"):
        load_checkpoint(path)


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot pickle"):
        save_checkpoint(path, {"bad": (x for x in [])})  # not serialisable
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("class_names: [a, b]\ndataset_paths: {}\n", "it is a dataset definition (YAML)"),
        ("yogo_version: 1\nconfig:\n  ddf: d.yml\n", "it is a run's config.yaml"),
        ("some notes\n", "it is a text file"),
        (bytes(range(7, 250)) * 4, "not a file PyTorch writes"),
        (b"", "the file is empty"),
    ],
    ids=["ddf", "config", "text", "random-bytes", "empty"],
)
def test_what_is_not_a_checkpoint_is_said_before_loading(
    tmp_path: Path, run_cli, content: str | bytes, message: str
) -> None:
    path = tmp_path / "model.pth"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    ddf = simple_ddf(tmp_path / "data")
    for command in (
        ["test", path, ddf],
        ["export", path],
        ["infer", path, "--path-to-images", tmp_path],
        ["train", ddf, "--from-pretrained", path, "--output-dir", tmp_path / "runs"],
    ):
        result = run_cli(*command)
        assert result.code == 2, (command, result.err)
        assert f"is not a checkpoint: {message}" in result.err and "Traceback" not in result.err


def test_folders_and_onnx_files_given_as_checkpoints(tmp_path: Path, run_cli) -> None:
    run = tmp_path / "run"
    run.mkdir()
    empty = run_cli("export", run)
    assert empty.code == 2 and "is a folder, not a checkpoint" in empty.err
    path, _ = saved(run)
    path.rename(run / "best.pth")
    (run / "onnx.onnx").write_bytes(b"\x08\x07")
    folder = run_cli("export", run)
    assert folder.code == 2 and "is a run folder, not a checkpoint" in folder.err
    assert "best.pth (best.pth: the best validation" in folder.err
    onnx = run_cli("export", run / "onnx.onnx")
    assert onnx.code == 2 and "it is an ONNX model" in onnx.err


def test_swapped_test_arguments_are_named(tmp_path: Path, run_cli) -> None:
    path, _ = saved(tmp_path)
    ddf = tmp_path / "ddf.yml"
    ddf.write_text("class_names: [a, b]\n")
    result = run_cli("test", ddf, path)
    assert (
        result.code == 2 and "the checkpoint and the dataset definition are swapped" in result.err
    )
    assert f"fix: yogo test {path} {ddf}" in result.err


@pytest.mark.parametrize("seed", range(40))
def test_garbage_in_torch_s_legacy_format_is_damaged_not_an_attack(tmp_path: Path, seed: int):
    """Bytes that start like a legacy torch file (a pickle) but are noise: torch.load raises
    IndexError, KeyError, UnicodeDecodeError or an UnpicklingError; each is a damaged file."""
    noise = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(seed))
    path = tmp_path / "m.pth"
    path.write_bytes(b"\x80\x02" + bytes(noise.to(torch.uint8).tolist()))
    with pytest.raises(UserError, match="is not a readable checkpoint") as refused:
        load_checkpoint(path)
    assert "could run code" not in str(refused.value)
