"""Settings: each default is written once (yogo.config), and the CLI and the API run the same
thing (issue #9: `yogo train` and `yogo.train(TrainConfig(...))` used to differ)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import typer
from ruamel.yaml import YAML
from typer.testing import CliRunner

from yogo.cli import app
from yogo.config import (
    BadLabelsPolicy,
    CheckConfig,
    ExportConfig,
    InferConfig,
    SynthConfig,
    TestConfig,
    TrainConfig,
    choices,
    field_docs,
)
from yogo.errors import UserError

# Command -> (its settings, flags that are not settings: what the command itself writes or how
# it reads its settings).
COMMANDS: dict[str, tuple[type[Any], set[str]]] = {
    "check": (CheckConfig, {"json_path", "force"}),
    "synth": (SynthConfig, set()),
    "train": (TrainConfig, {"config", "half"}),
    "test": (TestConfig, {"json_path", "dump_to_disk"}),
    "export": (ExportConfig, set()),
    "infer": (InferConfig, set()),
}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return list(value) or None  # typer: an unset multiple option is () or None
    return value


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_is_a_setting_with_the_settings_default(command: str) -> None:
    settings, cli_only = COMMANDS[command]
    group = typer.main.get_command(app)
    params = {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]
    fields = {f.name: f for f in dataclasses.fields(settings)}
    assert set(params) - cli_only == set(fields)
    for name, f in fields.items():
        if f.default is not dataclasses.MISSING:
            expected = f.default
        elif f.default_factory is not dataclasses.MISSING:
            expected = f.default_factory()
        else:
            continue  # required: an argument of the command
        got = params[name].default
        assert _plain(got) == _plain(expected), f"{command} --{name.replace('_', '-')}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_a_setting_shows_its_docstring_as_help(command: str) -> None:
    """The field's docstring is the one help text: a setting without one, or a flag whose
    help says something else, fails."""
    settings, _ = COMMANDS[command]
    docs = field_docs(settings)
    missing = [f.name for f in dataclasses.fields(settings) if not docs.get(f.name)]
    assert missing == [], f"{settings.__name__} fields without a docstring"
    group = typer.main.get_command(app)
    for param in group.commands[command].params:  # type: ignore[attr-defined]
        if param.name in docs:
            assert param.help == docs[param.name], f"yogo {command} {param.name}"


def test_each_choice_is_written_once_and_checked_by_its_type() -> None:
    """A Literal setting's values are its `--help` metavar and its check's message."""
    help_text = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.split())
    assert "--precision auto|32|bf16|fp16" in help_text
    with pytest.raises(UserError, match="--obj-loss must be mse or bce, got 'l1'"):
        TrainConfig(ddf="x.yml", obj_loss="l1").require_valid()  # type: ignore[arg-type]
    with pytest.raises(UserError, match="--split must be test, val or train, got 'dev'"):
        TestConfig(checkpoint="a.pth", ddf="x.yml", split="dev").require_valid()  # type: ignore[arg-type]
    assert choices(BadLabelsPolicy) == ("error", "drop", "clip")


def test_the_model_flag_names_every_registered_network() -> None:
    from yogo.model.network import MODELS

    assert all(name in field_docs(TrainConfig)["model"] for name in MODELS)


def test_write_dataset_takes_the_synth_settings_and_their_defaults() -> None:
    import inspect

    from yogo.data.synth import write_dataset

    parameters = inspect.signature(write_dataset).parameters
    assert list(parameters) == [f.name for f in dataclasses.fields(SynthConfig)]
    for f in dataclasses.fields(SynthConfig):
        assert parameters[f.name].default in (f.default, inspect.Parameter.empty), f.name


def test_normalize_images_is_on_for_the_cli_and_the_api() -> None:
    assert TrainConfig(ddf="x.yml").normalize_images is True


def _settings(run: Path) -> dict[str, Any]:
    document = YAML(typ="safe", pure=True).load((run / "config.yaml").read_text())
    settings: dict[str, Any] = document["config"]
    settings.pop("name")
    return settings


@pytest.mark.slow
def test_cli_and_api_runs_with_the_same_values_save_the_same_settings(
    run_cli, tmp_path: Path
) -> None:
    import yogo
    from yogo.data.synth import write_dataset

    ddf = write_dataset(tmp_path / "data", 8, (64, 96), seed=4, split_fractions=(0.75, 0.25, 0))
    out = tmp_path / "runs"
    explicit: dict[str, Any] = {"epochs": 1, "batch_size": 4, "num_workers": 0, "seed": 3}
    result = run_cli(
        "train",
        ddf,
        "--epochs",
        "1",
        "-bs",
        "4",
        "--num-workers",
        "0",
        "--seed",
        "3",
        "--no-wandb",
        "--output-dir",
        out,
        "--name",
        "cli",
    )
    assert result.code == 0, result.err
    yogo.train(TrainConfig(ddf=str(ddf), output_dir=str(out), name="api", wandb=False, **explicit))
    assert _settings(out / "cli") == _settings(out / "api")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TestConfig(checkpoint="a.pth", ddf="d.yml", split="dev"), "--split must be"),
        (TestConfig(checkpoint="a.pth", ddf="d.yml", obj_thresh=2), "--obj-thresh must be"),
        (ExportConfig(checkpoint="a.pth", opset=3), "--opset 3 is not supported"),
        (ExportConfig(checkpoint="a.pth", crop_height=0), "--crop-height must be"),
        (InferConfig(model="m.onnx", path_to_images="f", batch_size=0), "--batch-size must be"),
        (InferConfig(model="m.onnx", path_to_images="f", num_workers=-1), "--num-workers must"),
    ],
)
def test_settings_are_checked_in_the_flags_words(settings: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        settings.require_valid()


def test_the_docs_list_the_flags_a_resume_uses() -> None:
    """docs/outputs.md left out --cache, which docs/training.md listed (and resume uses)."""
    from yogo.training.resume import RESUME_KEEPS_GIVEN

    docs = Path(__file__).parents[1] / "docs"
    for page in ("outputs.md", "training.md"):
        text = " ".join((docs / page).read_text().split())
        sentence = text[text.index("flags given with `--resume`") :][:200]
        for name in RESUME_KEEPS_GIVEN:
            assert f"`--{name.replace('_', '-')}`" in sentence, (page, name)
