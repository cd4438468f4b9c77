"""Images: lookup by stem, headers, 8/16-bit gray/RGB decoding to uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from yogo.data.images import ImageError, child_paths, decode_image, index_images, read_header


def test_lookup_by_stem_over_every_extension_any_case(tmp_path: Path) -> None:
    names = ["a.png", "b.JPG", "c.jpeg", "d.TIF", "e.tiff", "f.bmp", "notes.txt", "g.gif"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    index = index_images(tmp_path)
    assert sorted(index.by_stem) == ["a", "b", "c", "d", "e", "f"]
    assert index.ambiguous == {}


def test_several_images_with_one_stem_pick_png_and_are_reported(tmp_path: Path) -> None:
    for name in ("x.tif", "x.png", "x.jpg"):
        (tmp_path / name).write_bytes(b"x")
    index = index_images(tmp_path)
    assert index.by_stem["x"].name == "x.png"
    assert [p.name for p in index.ambiguous["x"]] == ["x.png", "x.jpg", "x.tif"]


@pytest.mark.parametrize(
    ("suffix", "mode", "channels", "depth"),
    [
        (".png", "L", 1, 8),
        (".png", "RGB", 3, 8),
        (".png", "I;16", 1, 16),
        (".tif", "I;16", 1, 16),
        (".tif", "L", 1, 8),
        (".jpg", "L", 1, 8),
        (".bmp", "RGB", 3, 8),
    ],
)
def test_header(tmp_path: Path, suffix: str, mode: str, channels: int, depth: int) -> None:
    path = write_image(tmp_path / f"i{suffix}", (20, 30), mode)
    header = read_header(path)
    assert (header.height, header.width, header.channels, header.bit_depth) == (
        20,
        30,
        channels,
        depth,
    )


def test_decode_8bit_gray_exactly(tmp_path: Path) -> None:
    pixels = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g.png")
    out = decode_image(tmp_path / "g.png", channels=1)
    assert out.dtype == np.uint8 and out.shape == (1, 20, 30)
    np.testing.assert_array_equal(out[0], pixels)
    rgb = decode_image(tmp_path / "g.png", channels=3)
    assert rgb.shape == (3, 20, 30) and all((rgb[c] == pixels).all() for c in range(3))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_decode_16bit_scales_to_8bit(tmp_path: Path, suffix: str) -> None:
    pixels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / f"w{suffix}")
    out = decode_image(tmp_path / f"w{suffix}", channels=1)
    assert out.tolist() == [[[0, 1, 128, 255]]]
    assert decode_image(tmp_path / f"w{suffix}", channels=3).shape == (3, 1, 4)


def test_decode_rgb_to_gray_and_rgb(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red
    Image.fromarray(pixels).save(tmp_path / "c.png")
    rgb = decode_image(tmp_path / "c.png", channels=3)
    assert rgb.shape == (3, 2, 3) and rgb[0].min() == 255 and rgb[1].max() == 0
    gray = decode_image(tmp_path / "c.png", channels=1)
    assert gray.shape == (1, 2, 3) and int(gray[0, 0, 0]) == 76  # ITU-R 601 luma of red


def test_decode_rgba_and_palette(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 2), (10, 20, 30, 0)).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "a.png", channels=3)[:, 0, 0].tolist() == [10, 20, 30]
    Image.new("RGB", (4, 2), (200, 200, 200)).convert("P").save(tmp_path / "p.png")
    assert read_header(tmp_path / "p.png").channels == 3
    assert decode_image(tmp_path / "p.png", channels=1).shape == (1, 2, 4)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "file is empty"), (b"this is not an image", "not a readable image")],
)
def test_unreadable_headers(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        read_header(tmp_path / "bad.png")
    with pytest.raises(ImageError):
        decode_image(tmp_path / "bad.png", channels=1)


def test_truncated_image_has_a_header_but_fails_to_decode(tmp_path: Path) -> None:
    path = write_image(tmp_path / "t.png", (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert read_header(path).height == 64
    with pytest.raises(ImageError, match="cannot be decoded"):
        decode_image(path, channels=1)


def test_unsupported_float_images_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="unsupported pixel format 'F'"):
        read_header(tmp_path / "f.tif")


def test_multi_page_tiff_uses_page_1_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pages = [Image.fromarray(np.full((8, 10), value, dtype=np.uint8)) for value in (10, 20, 30)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert read_header(path).pages == 3
    assert decode_image(path, channels=1)[0].max() == 10
    decode_image(path, channels=3)
    warnings = [r.getMessage() for r in caplog.records if "stack.tif" in r.getMessage()]
    assert warnings == [
        f"{path}: has 3 pages; gray and RGB models use only page 1 (--channels N reads N "
        "pages as N channels)"
    ]
    single = write_image(tmp_path / "one.tif", (8, 10))
    assert read_header(single).pages == 1 and decode_image(single, channels=1).shape == (1, 8, 10)
    assert not [r for r in caplog.records if "one.tif" in r.getMessage()]


@pytest.mark.parametrize("folder", ["/data/set/images", "set/images", ".", "/"])
def test_child_paths_are_the_paths_slash_gives(folder: str) -> None:
    names = ["a.png", "B C.tif", "f000001.png", ".hidden.png"]
    fast = child_paths(Path(folder), names)
    for path, name in zip(fast, names, strict=True):
        plain = Path(folder) / name
        assert (path, str(path), hash(path), type(path)) == (
            plain,
            str(plain),
            hash(plain),
            type(plain),
        )
        assert path.parent == plain.parent and path.name == name
