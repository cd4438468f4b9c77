"""Frames from zarr stores as the microscope writes them (yogo.data.frames), read through real
zarr stores of format 2 and 3, directory and zip, by several loader processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yogo.data.frames import ImageFiles, ZarrFrames, open_frames
from yogo.data.images import decode_image
from yogo.errors import UserError

zarr = pytest.importorskip("zarr")

RNG = np.random.default_rng(3)
FRAMES = RNG.integers(0, 256, (5, 24, 32), dtype=np.uint8)  # (N, H, W)


def store(path: Path, data: np.ndarray, chunks: tuple[int, ...], zarr_format: int = 3) -> Path:
    array = zarr.create_array(
        str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=zarr_format
    )
    array[...] = data
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("layout", "data", "chunks"),
    [
        ("hwn", FRAMES.transpose(1, 2, 0), (24, 32, 1)),  # YOGO 1.0.1's (H, W, N)
        ("nhw", FRAMES, (1, 24, 32)),
        ("nhwc", FRAMES[..., None].repeat(3, axis=3), (1, 24, 32, 3)),
    ],
)
def test_every_layout_reads_the_same_frames(
    tmp_path: Path, zarr_format: int, layout: str, data: np.ndarray, chunks: tuple[int, ...]
) -> None:
    frames = ZarrFrames(store(tmp_path / "run.zarr", data, chunks, zarr_format))
    assert frames.layout == layout and len(frames) == 5
    assert frames.names == [f"run.zarr/{i}" for i in range(5)]
    assert frames.stems == [Path("run") / str(i) for i in range(5)]
    for i in range(5):
        np.testing.assert_array_equal(frames.read(i, 1), FRAMES[i][None])
        assert frames.read(i, 3).shape == (3, 24, 32)


def test_a_store_of_more_than_ten_frames_pads_its_names(tmp_path: Path) -> None:
    data = np.ones((12, 8, 8), np.uint8)
    frames = ZarrFrames(store(tmp_path / "s.zarr", data, (1, 8, 8)))
    assert frames.names[:2] == ["s.zarr/00", "s.zarr/01"] and frames.names[-1] == "s.zarr/11"


def test_uint16_frames_match_16_bit_images_and_rgb_matches_pillow(tmp_path: Path) -> None:
    """A zarr frame gives the pixels an image file of the same values decodes to."""
    wide = RNG.integers(0, 65536, (2, 24, 32), dtype=np.uint16)
    frames = ZarrFrames(store(tmp_path / "w.zarr", wide, (1, 24, 32)))
    Image.fromarray(wide[1]).save(tmp_path / "w.png")
    np.testing.assert_array_equal(frames.read(1, 1), decode_image(tmp_path / "w.png", 1))
    rgb = RNG.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    colour = ZarrFrames(store(tmp_path / "c.zarr", rgb, (1, 24, 32, 3)))
    Image.fromarray(rgb[0]).save(tmp_path / "c.png")
    for channels in (1, 3):
        np.testing.assert_array_equal(
            colour.read(0, channels), decode_image(tmp_path / "c.png", channels)
        )


def test_a_group_of_2d_arrays_in_natural_order(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=2)
    for name in ("img_10", "img_2", "img_1"):
        group.create_array(name, shape=(24, 32), dtype="uint8")[...] = int(name[4:])
    frames = ZarrFrames(tmp_path / "g.zarr")
    assert frames.names == ["g.zarr/img_1", "g.zarr/img_2", "g.zarr/img_10"]
    assert frames.read(2, 1).max() == 10


def test_a_zipped_store(tmp_path: Path) -> None:
    zipped = zarr.storage.ZipStore(str(tmp_path / "run.zip"), mode="w")
    array = zarr.create_array(zipped, shape=(24, 32, 3), chunks=(24, 32, 1), dtype="uint8")
    array[...] = FRAMES[:3].transpose(1, 2, 0)
    zipped.close()
    frames = ZarrFrames(tmp_path / "run.zip")
    assert frames.names == ["run.zip/0", "run.zip/1", "run.zip/2"]
    np.testing.assert_array_equal(frames.read(2, 1)[0], FRAMES[2])


def test_frames_never_written_read_as_blank_and_are_reported(tmp_path: Path, caplog) -> None:
    """A scope that stopped early leaves chunks never written: they read as blank frames, and
    every frame keeps its index (YOGO 1.0.1 counted stored chunks only, so a blank frame
    shifted the later ones)."""
    array = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=(24, 32, 10), chunks=(24, 32, 1), dtype="uint8"
    )
    array[:, :, 1:4] = FRAMES[1:4].transpose(1, 2, 0)
    frames = ZarrFrames(tmp_path / "s.zarr")
    assert len(frames) == 10 and "7 of 10 frames were never written" in caplog.text
    np.testing.assert_array_equal(frames.read(3, 1)[0], FRAMES[3])
    assert frames.read(0, 1).max() == 0 and frames.read(9, 1).max() == 0


def test_an_ambiguous_array_is_read_as_yogos_hwn_unless_told(tmp_path: Path, caplog) -> None:
    data = FRAMES.transpose(1, 2, 0)
    path = store(tmp_path / "one.zarr", data, data.shape)  # one chunk: the axes cannot tell
    assert ZarrFrames(path).layout == "hwn" and "--zarr-layout nhw" in caplog.text
    assert len(ZarrFrames(path, "nhw")) == 24


@pytest.mark.slow
def test_loader_workers_read_a_store_each_on_their_own(tmp_path: Path) -> None:
    """A pickled source carries its path, not the open store; two worker processes read every
    frame right."""
    frames = ZarrFrames(store(tmp_path / "run.zarr", FRAMES, (1, 24, 32)))
    assert pickle.loads(pickle.dumps(frames))._node is None
    loader = torch.utils.data.DataLoader(
        _Reader(frames), batch_size=2, num_workers=2, multiprocessing_context="spawn"
    )
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, FRAMES)


class _Reader(torch.utils.data.Dataset[torch.Tensor]):
    def __init__(self, frames: ZarrFrames) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.frames.read(i, 1)[0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.mkdir(), p)[1], "is not a readable zarr store"),
        (lambda p: (p.write_text("x"), p)[1], "is a file but not a zipped zarr store"),
        (lambda p: store(p, FRAMES.astype(np.float32), (1, 24, 32)), "frames of type float32"),
        (lambda p: store(p, FRAMES[0], (24, 32)), "holds one array of shape (24, 32)"),
        (lambda p: store(p, np.zeros((2, 3, 4, 5, 1), np.uint8), (1, 3, 4, 5, 1)), "shape"),
        (lambda p: (zarr.open_group(str(p), mode="w"), p)[1], "a zarr group without arrays"),
    ],
)
def test_what_is_not_a_store_of_frames_is_named(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path / "bad.zarr")
    with pytest.raises(UserError, match=r"bad\.zarr") as e:
        ZarrFrames(path)
    assert message in str(e.value)


def test_one_source_exactly(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--path-to-images or --path-to-zarr"):
        open_frames(None, None, recursive=False)
    path = store(tmp_path / "run.zarr", FRAMES, (1, 24, 32))
    with pytest.raises(UserError, match="use --path-to-zarr"):
        open_frames(str(path), None, recursive=False)
    Image.fromarray(FRAMES[0]).save(tmp_path / "a.png")
    files = open_frames(str(tmp_path / "a.png"), None, recursive=False)
    assert isinstance(files, ImageFiles) and files.names == ["a.png"]


def test_without_zarr_installed_the_message_names_the_extra(tmp_path: Path) -> None:
    """In a process where `import zarr` fails (as without the extra), the user gets the pip
    command, not an ImportError."""
    code = (
        "import sys; sys.modules['zarr'] = None\n"
        "from pathlib import Path\n"
        "from yogo.data.frames import ZarrFrames\n"
        "from yogo.errors import UserError\n"
        "try:\n"
        f"    ZarrFrames(Path({str(tmp_path)!r}))\n"
        "except UserError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs the zarr package" in out.stdout and "pip install 'yogo[zarr]'" in out.stdout


def test_big_endian_frames_read_like_native_ones(tmp_path: Path) -> None:
    """A store of big-endian uint16 (`>u2`, as some cameras write) was refused."""
    wide = RNG.integers(0, 65536, (2, 24, 32), dtype=np.uint16)
    native = ZarrFrames(store(tmp_path / "n.zarr", wide, (1, 24, 32), zarr_format=2))
    big = ZarrFrames(store(tmp_path / "b.zarr", wide.astype(">u2"), (1, 24, 32), zarr_format=2))
    for i in range(2):
        np.testing.assert_array_equal(big.read(i, 1), native.read(i, 1))
