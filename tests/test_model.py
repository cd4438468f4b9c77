"""The model family and YOGO 1.0.1 checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model, model_config

from yogo.model.checkpoint import load_checkpoint, load_model
from yogo.model.network import MODELS, ModelConfig, grid_shape

FIXTURE = Path(__file__).parent / "fixtures" / "yogo-v1"


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_any_size_gray_or_rgb(name: str, channels: int) -> None:
    model = make_model(name, num_classes=4, channels=channels).eval()
    for hw in [(64, 80), (57, 91)]:
        images = torch.randint(0, 255, (2, channels, *hw), dtype=torch.uint8)
        raw = model(images)
        assert raw.shape == (2, 9, *grid_shape(hw))
        decoded = model.predict(images)
        assert decoded.shape == raw.shape and torch.isfinite(decoded).all()


def test_reference_grid() -> None:
    assert grid_shape((772, 1032)) == (97, 129)


def test_base_model_layout_matches_the_spec() -> None:
    model = make_model("base_model", num_classes=7)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.bias is not None) for c in convs] == [
        (1, 16, 2, False),
        (16, 32, 1, True),
        (32, 64, 2, True),
        (64, 128, 1, True),
        (128, 128, 2, False),
        (128, 128, 1, True),
        (128, 128, 1, True),
        (128, 12, 1, True),
    ]
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert dropouts == [0.05, 0.1, 0.15]


def test_normalisation_happens_inside_the_model() -> None:
    torch.manual_seed(0)
    normalising = make_model("base_model", 3, normalize_images=True).eval()
    plain = make_model("base_model", 3, normalize_images=False).eval()
    plain.load_state_dict(normalising.state_dict())
    images = torch.randint(0, 255, (1, 1, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(normalising(images), plain(images.float() / 255))


def test_variants_differ_in_size() -> None:
    count = {name: sum(p.numel() for p in make_model(name, 3).parameters()) for name in MODELS}
    assert count["quarter_filters"] < count["half_filters"] < count["base_model"]
    assert count["base_model"] < count["double_filters"]
    assert count["shallow_model"] < count["base_model"] < count["deep_model"]


def test_unknown_model_name_is_a_user_error() -> None:
    from yogo.errors import UserError

    with pytest.raises(UserError, match="--model 'tiny' is not a known model"):
        make_model("tiny", 3)


def test_yogo_v1_checkpoint_reproduces_its_output() -> None:
    """Every channel matches to 1e-4. Widths and heights, where exp() amplifies raw
    values up to 80 into numbers up to 3e33, match to 1e-3 relative: the reference itself
    differs from an exact (float64) evaluation by 3.6e-4 there (docs/design.md)."""
    model, info = load_model(FIXTURE / "base_model_7cls_772x1032.pth")
    assert info.class_names[0] == "healthy" and len(info.class_names) == 7
    assert info.image_hw == (772, 1032) and info.channels == 1 and not info.normalize_images
    images = torch.from_numpy(np.load(FIXTURE / "input_uint8_2x1x772x1032.npy"))
    expected = np.load(FIXTURE / "expected_inference_output.npy")
    with torch.no_grad():
        got = model.predict(images).numpy()
    assert got.shape == expected.shape == (2, 12, 97, 129)
    others = [0, 1, *range(4, 12)]
    np.testing.assert_allclose(got[:, others], expected[:, others], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[:, 2:4], expected[:, 2:4], rtol=1e-3, atol=1e-4)


def test_yogo_v1_checkpoint_metadata() -> None:
    checkpoint = load_checkpoint(FIXTURE / "base_model_7cls_772x1032.pth")
    assert checkpoint.source == "yogo-1.0.1"
    assert checkpoint.model_config.model_name == "base_model"
    assert checkpoint.model_config.anchor_w == pytest.approx(0.0425, abs=1e-4)
    assert not checkpoint.model_config.neighbour_cells  # YOGO's decoding


def test_model_settings_round_trip_and_older_files_decode_as_before() -> None:
    config = dataclasses.replace(make_model("base_model", 2).config, neighbour_cells=True)
    assert ModelConfig.from_dict(config.to_dict()) == config
    older = {k: v for k, v in config.to_dict().items() if k != "centre_range"}
    assert not ModelConfig.from_dict(older).neighbour_cells  # stored as centre_range 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_outputs_the_grid_check_and_targets_use(name: str) -> None:
    model = make_model(name, 2).eval()
    for hw in [(772, 1032), (192, 256), (57, 91), (8, 8), (9, 17)]:
        out = model(torch.zeros(1, 1, *hw))
        assert grid_shape(hw) == tuple(out.shape[2:])


def test_public_api_is_lazy_and_complete() -> None:
    import yogo
    import yogo.training.loop

    assert callable(yogo.train) and callable(yogo.load_model)
    assert callable(yogo.test) and callable(yogo.export_onnx)
    assert all(getattr(yogo, name) is not None for name in yogo.__all__)
    assert yogo.TrainConfig(ddf="x.yml").epochs == 64
    with pytest.raises(AttributeError):
        yogo.not_there  # noqa: B018


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("normalize_images", [True, False, "16-bit mean and std"])
def test_fused_inference_copy_computes_what_the_network_does(
    name: str, normalize_images: bool | str
) -> None:
    """`yogo infer` runs a .pth as its fused copy (batch-norms folded into the convs, /255
    into the first conv's weights, no dropout): the same outputs as the eval-mode network,
    trained batch-norm statistics included, and the original left as it was. A per-channel
    mean and std (16-bit and N-channel models) stays outside the folded convs."""
    from yogo.model.network import build_model, fused_for_inference

    torch.manual_seed(0)
    config = model_config(name, 4, normalize_images=bool(normalize_images))
    if normalize_images == "16-bit mean and std":
        config = dataclasses.replace(
            config, bit_depth=16, input_mean=(30000.0,), input_std=(9000.0,)
        )
    model = build_model(config)
    for module in model.modules():  # statistics and affine parameters as training leaves them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fused_for_inference(model)
    kinds = {type(m) for m in fused.modules()}
    assert torch.nn.BatchNorm2d not in kinds and torch.nn.Dropout2d not in kinds
    images = torch.randint(0, 255, (2, model.channels, 64, 80), dtype=torch.uint8)
    scale = 1.0 if normalize_images is True else 1 / 255  # raw outputs where exp() is tame
    if normalize_images == "16-bit mean and std":
        scale = 257.0  # the 16-bit range
    with torch.inference_mode():
        expected = model(images.float() * scale)
        got = fused(images.float() * scale)
        channels_last = fused.to(memory_format=torch.channels_last)(
            (images.float() * scale).contiguous(memory_format=torch.channels_last)
        )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(channels_last, expected, rtol=1e-4, atol=1e-4)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
