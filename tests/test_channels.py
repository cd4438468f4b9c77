"""Frames of N channels and 16 bits: decoding (PNG, TIFF pages and samples, zarr (T, C, H, W)),
the per-channel normalisation stored with the model, the refusals, and a brief 2-channel
16-bit run through train, infer, test and ONNX export."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yogo.data.channels import display_planes, to_channels
from yogo.data.frames import ZarrFrames
from yogo.data.images import ChannelMismatch, ImageError, decode_image, read_header
from yogo.model.network import ModelConfig, build_model

FIXTURE = Path(__file__).parent / "fixtures" / "yogo-v1"


def gray16(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint16)).save(path)
    return path


def stack16(path: Path, planes: np.ndarray) -> Path:
    """A TIFF stack of 16-bit gray pages, one per channel."""
    pages = [Image.fromarray(p.astype(np.uint16)) for p in planes]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def png16_rgb(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit RGB PNG written by hand: Pillow cannot write one."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


PLANES = (np.arange(2 * 6 * 8).reshape(2, 6, 8) * 641 + 7).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_frames_decode_as_uint16_exactly(tmp_path: Path, suffix: str) -> None:
    path = gray16(tmp_path / f"f{suffix}", PLANES[0])
    assert read_header(path).bit_depth == 16
    got = decode_image(path, 1, bit_depth=16)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got[0], PLANES[0])
    # An 8-bit model still reads it as before (rounded to 0..255).
    np.testing.assert_array_equal(decode_image(path, 1)[0], (PLANES[0] + 128) // 257)


def test_a_two_page_tiff_is_two_channels(tmp_path: Path) -> None:
    path = stack16(tmp_path / "f.tif", PLANES)
    assert read_header(path).planes == 2
    got = decode_image(path, 2, bit_depth=16)
    np.testing.assert_array_equal(got, PLANES)
    # Gray models keep page 1, as before.
    np.testing.assert_array_equal(decode_image(path, 1, bit_depth=16)[0], PLANES[0])


def test_samples_per_pixel_are_channels(tmp_path: Path) -> None:
    """Gray + alpha is two samples per pixel; an 8-bit frame in a 16-bit model is x257."""
    pixels = np.stack([PLANES[0] % 256, PLANES[1] % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(pixels, "LA").save(path)
    assert read_header(path).planes == 2
    got = decode_image(path, 2, bit_depth=16)
    np.testing.assert_array_equal(got, pixels.transpose(2, 0, 1).astype(np.uint16) * 257)


def test_a_zarr_of_t_c_h_w_frames(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    frames = np.stack([PLANES, PLANES[::-1]])  # (T=2, C=2, 6, 8)
    array = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=frames.shape, chunks=(1, 2, 6, 8), dtype="uint16"
    )
    array[...] = frames
    store = ZarrFrames(tmp_path / "s.zarr")
    assert store.layout == "nchw" and len(store) == 2
    np.testing.assert_array_equal(store.read(1, 2, bit_depth=16), PLANES[::-1])
    with pytest.raises(ChannelMismatch, match=r"has 2 channel\(s\).*--channels 2"):
        store.read(0, 4, bit_depth=16)


def test_a_uint16_frame_keeps_what_8_bits_would_lose(tmp_path: Path) -> None:
    """Two objects differing only in the low byte (0x1234, 0x1256) are one grey level at 8
    bits and stay distinct in the tensor the 16-bit model's layers see."""
    pixels = np.full((16, 16), 0x1000, np.uint16)
    pixels[2:6, 2:6] = 0x1234
    pixels[10:14, 10:14] = 0x1256
    path = gray16(tmp_path / "f.png", pixels)
    squashed = decode_image(path, 1)
    assert squashed[0, 3, 3] == squashed[0, 11, 11]
    frame = decode_image(path, 1, bit_depth=16)
    config = ModelConfig(
        "base_model", ("a",), 1, True, (16, 16), 0.1, 0.1, bit_depth=16,
        input_mean=(4200.0,), input_std=(50.0,),
    )  # fmt: skip
    model = build_model(config).eval()
    seen: list[torch.Tensor] = []
    model.model.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    model(torch.from_numpy(frame)[None])
    first, second = float(seen[0][0, 0, 3, 3]), float(seen[0][0, 0, 11, 11])
    assert second - first == pytest.approx((0x1256 - 0x1234) / 50.0)


def test_model_config_round_trips_and_old_dicts_mean_8_bits() -> None:
    config = ModelConfig(
        "base_model", ("a", "b"), 2, True, (32, 32), 0.1, 0.1, bit_depth=16,
        input_mean=(100.0, 200.0), input_std=(10.0, 20.0),
    )  # fmt: skip
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = {k: v for k, v in config.to_dict().items() if k not in ("bit_depth", "input_mean")}
    old.pop("input_std")
    restored = ModelConfig.from_dict({**old, "channels": 1})
    assert restored.bit_depth == 8 and restored.input_mean is None


def test_old_checkpoints_give_bit_identical_outputs() -> None:
    """YOGO 1.0.1's fixture through the forward with the normalisation branch: unchanged."""
    from yogo.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(FIXTURE / "base_model_7cls_772x1032.pth")
    assert checkpoint.model_config.bit_depth == 8 and checkpoint.model_config.input_mean is None
    model = checkpoint.build_model().eval()
    images = torch.from_numpy(np.load(FIXTURE / "input_uint8_2x1x772x1032.npy"))
    with torch.no_grad():
        x = images.float()
        x = x / 255.0 if model.normalize_images else x
        by_hand = model.model(x)
        assert torch.equal(model(images), by_hand)


def test_channel_rules_refuse_rather_than_invent() -> None:
    two = np.zeros((2, 4, 4), np.uint8)
    assert to_channels(two, 2, "2 pages").shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"has 2 channel\(s\) \(2 pages\); the model takes 4"):
        to_channels(two, 4, "2 pages")
    assert to_channels(np.zeros((1, 4, 4), np.uint16), 3, "x").shape == (3, 4, 4)


def test_a_16_bit_colour_png_is_refused_by_a_16_bit_model(tmp_path: Path) -> None:
    path = png16_rgb(tmp_path / "c.png", np.full((4, 5, 3), 1000, np.uint16))
    with pytest.raises(ImageError, match=r"16-bit RGB PNG.*TIFF stack"):
        decode_image(path, 3, bit_depth=16)
    assert decode_image(path, 3).dtype == np.uint8  # an 8-bit model reads it as before


def test_display_planes_show_16_bit_and_two_channels() -> None:
    frame = np.stack([np.full((4, 4), 1000), np.full((4, 4), 3000)]).astype(np.uint16)
    frame[0, 0, 0], frame[1, 3, 3] = 9000, 100
    shown = display_planes(frame)
    assert shown.dtype == np.uint8 and shown.shape == (3, 4, 4)
    assert shown[1].max() == 255 and shown[0].min() == 0  # stretched, not value / 257
    gray = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    np.testing.assert_array_equal(display_planes(gray), np.repeat(gray, 3, axis=0))


def expected_all(model_path: Path, frames: np.ndarray) -> np.ndarray:
    from yogo.deploy.predictor import load_predictor

    return load_predictor(model_path, "cpu").run(frames).numpy()


def two_channel_dataset(root: Path, count: int = 24) -> Path:
    """Synthetic smears as 2-page 16-bit TIFFs: phase-like (the smear, x257 plus a low-byte
    ripple) and fluorescence-like (its inverse, dimmer)."""
    from yogo.data.synth import write_dataset

    ddf = write_dataset(root, count, (64, 80), ("healthy", "ring"), seed=3)
    for png in sorted((root / "images").glob("*.png")):
        smear = np.asarray(Image.open(png)).astype(np.uint32)
        ripple = (np.arange(smear.size).reshape(smear.shape) * 37) % 200
        phase = smear * 250 + ripple
        fluorescence = (255 - smear) * 90 + 300
        stack16(png.with_suffix(".tif"), np.stack([phase, fluorescence]))
        png.unlink()
    return ddf


def test_channels_that_do_not_match_stop_with_the_file_and_the_fix(run_cli, tmp_path) -> None:
    from yogo.data.synth import write_dataset

    ddf = write_dataset(tmp_path / "d", 8, (32, 40), ("a",), seed=1)
    out = tmp_path / "runs"
    result = run_cli("train", ddf, "--channels", "2", "--epochs", "1", "--output-dir", out)
    assert result.code == 2
    assert ".png" in result.err and "has 1 channel(s)" in result.err
    assert "--channels 1" in result.err
    assert not out.exists() or not any(out.rglob("*.pth"))
    result = run_cli("train", ddf, "--channels", "2", "--rgb-images", "--output-dir", out)
    assert result.code == 2 and "--rgb-images means 3 channels" in result.err


@pytest.mark.slow
def test_two_channel_16_bit_train_infer_test_export(run_cli, tmp_path) -> None:
    """A brief run on 2-channel 16-bit frames: the checkpoint stores the fitted per-channel
    normalisation; infer and test run on the frames; the ONNX file takes uint16 frames and
    agrees with PyTorch; a mismatched frame at infer is one clear error."""
    import onnx
    import onnxruntime as ort

    import yogo
    from yogo.deploy.predictor import load_predictor

    ddf = two_channel_dataset(tmp_path / "data")
    run = yogo.train(
        yogo.TrainConfig(
            ddf=str(ddf), channels=2, epochs=4, batch_size=4, num_workers=0, wandb=False,
            output_dir=str(tmp_path / "runs"), name="two", augment=True,
            augment_brightness=0.1, augment_noise=2.0,
        )
    )  # fmt: skip
    model_path = run / "last.pth"
    checkpoint = torch.load(model_path, weights_only=True)
    stored = checkpoint["model"]
    assert stored["channels"] == 2 and stored["bit_depth"] == 16
    assert len(stored["input_mean"]) == 2 and stored["input_mean"][0] > 255  # 16-bit units
    assert all(s > 1 for s in stored["input_std"])

    images = tmp_path / "data" / "images"
    out = tmp_path / "infer"
    result = run_cli(
        "infer", model_path, "--path-to-images", images, "--output-dir", out, "--draw-boxes",
        "--save-preds",
    )  # fmt: skip
    assert result.code == 0, result.err
    drawn = sorted((out / "boxes").glob("*.png"))
    assert len(drawn) == len(list(images.glob("*.tif")))
    picture = np.asarray(Image.open(drawn[0]).convert("RGB"))
    assert picture.std() > 10  # a visible composite, not a black frame

    report = tmp_path / "test.html"
    result = run_cli("test", model_path, ddf, "--split", "val", "--report", report)
    assert result.code == 0, result.err
    assert "data:image/png;base64" in report.read_text()

    result = run_cli("export", model_path)
    assert result.code == 0, result.err
    assert "input images uint16" in result.out
    onnx_path = model_path.with_suffix(".onnx")
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["bit_depth"] == "16" and json.loads(meta["input_mean"]) == stored["input_mean"]
    frames = np.stack([decode_image(p, 2, 16) for p in sorted(images.glob("*.tif"))[:3]])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": frames[:1]})[0]
    expected = load_predictor(model_path, "cpu").run(frames[:1]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    if importlib.util.find_spec("openvino") is not None:  # an optional extra
        result = run_cli("export", model_path, "--format", "openvino", "--force")
        assert result.code == 0, result.err
        assert "input images uint16" in result.out
        xml = load_predictor(model_path.with_suffix(".xml"))
        np.testing.assert_allclose(
            xml.run(frames).numpy(), expected_all(model_path, frames), atol=1e-3
        )

    # A folder of 1-channel frames given to the 2-channel model: one error, exit 2.
    gray = tmp_path / "gray"
    gray.mkdir()
    gray16(gray / "g.png", PLANES[0])
    result = run_cli("infer", onnx_path, "--path-to-images", gray, "--output-dir", out / "g")
    assert result.code == 2
    assert "g.png" in result.err and "the model takes 2" in result.err
    shutil.rmtree(out)


def two_channel_checkpoint(path: Path) -> Path:
    from yogo.model.checkpoint import checkpoint_payload, save_checkpoint

    config = ModelConfig(
        "quarter_filters", ("a", "b"), 2, True, (24, 32), 0.2, 0.2, bit_depth=16,
        input_mean=(30000.0, 2000.0), input_std=(9000.0, 500.0),
    )  # fmt: skip
    save_checkpoint(path, checkpoint_payload(build_model(config)))
    return path


def test_a_zarr_of_two_channel_frames_runs_through_infer(run_cli, tmp_path) -> None:
    """A (T, 2, H, W) uint16 store and a 2-channel 16-bit checkpoint (which loads with its
    normalisation); zarr frames cannot go to PNG for --save-preds: refused before any work."""
    zarr = pytest.importorskip("zarr")
    from yogo.model.checkpoint import load_checkpoint

    model = two_channel_checkpoint(tmp_path / "m.pth")
    assert load_checkpoint(model).model_config.input_std == (9000.0, 500.0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 65535, (3, 2, 24, 32), dtype=np.uint16)
    array = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=frames.shape, chunks=(1, 2, 24, 32), dtype="uint16"
    )
    array[...] = frames
    out = tmp_path / "out"
    flags = ("--path-to-zarr", tmp_path / "s.zarr", "--output-dir", out)
    result = run_cli("infer", model, *flags, "--save-npy", "--draw-boxes", "--obj-thresh", "0")
    assert result.code == 0, result.err
    assert "3 image(s)" in result.out and len(list((out / "boxes").rglob("*.png"))) == 3
    result = run_cli("infer", model, *flags[:2], "--output-dir", tmp_path / "o2", "--save-preds")
    assert result.code == 2 and "cannot hold this model's 2 channel(s)" in result.err
    assert not (tmp_path / "o2").exists()


def test_the_frame_cache_keeps_uint16_frames(tmp_path: Path) -> None:
    """A 16-bit dataset's frames are cached as uint16 (full values, also after a pickle, as
    spawned loader workers get them) and read back as the decoder gave them."""
    import pickle

    from yogo.data.cache import FrameCache, plan_cache
    from yogo.data.dataset import DetectionDataset
    from yogo.data.scan import scan_dataset
    from yogo.ddf import DatasetDefinition

    ddf = two_channel_dataset(tmp_path / "data", 4)
    samples = scan_dataset(DatasetDefinition.from_yaml(ddf), "error").splits["train"]
    dataset = DetectionDataset(samples, (64, 80), 2, bit_depth=16)
    cache = FrameCache.create(
        plan_cache("ram", 1 << 20, tmp_path), len(dataset), (2, 64, 80), np.uint16
    )
    dataset.use_cache(cache, 0)
    first = dataset.frame(0)
    assert first.dtype == torch.uint16 and int(first.numpy().max()) > 255
    again = pickle.loads(pickle.dumps(cache))
    assert again.dtype == np.uint16
    np.testing.assert_array_equal(again.get(0), decode_image(samples[0].image, 2, 16))


def test_models_of_different_bit_depths_are_not_run_together(run_cli, tmp_path) -> None:
    from yogo.model.checkpoint import checkpoint_payload, save_checkpoint

    sixteen = two_channel_checkpoint(tmp_path / "m16.pth")
    config = ModelConfig("quarter_filters", ("a", "b"), 2, True, (24, 32), 0.2, 0.2)
    save_checkpoint(tmp_path / "m8.pth", checkpoint_payload(build_model(config)))
    folder = tmp_path / "frames"
    folder.mkdir()
    stack16(folder / "f.tif", np.zeros((2, 24, 32), np.uint16))
    result = run_cli(
        "infer", sixteen, "--model", tmp_path / "m8.pth", "--path-to-images", folder,
        "--output-dir", tmp_path / "out",
    )  # fmt: skip
    assert result.code == 2 and "must share their bit depth" in result.err
