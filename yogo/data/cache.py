"""The frame cache: decoded, resized uint8 (or uint16) frames in one buffer shared by every
loader worker of a node (and by the training processes of a node), so an epoch after the
first decodes nothing.

    plan = plan_cache("auto", frames=1200, frame_shape=(1, 772, 1032), run_dir=run_dir)
    cache = FrameCache.create(plan, 1200, (1, 772, 1032))     # on one process per node
    other = FrameCache.open(cache.handle(), 1200, (1, 772, 1032))  # the other processes
    cache.get(i)            # (C, H, W) uint8 view, or None until someone has put it
    cache.put(i, frame)

`--cache`: `ram` is an anonymous memory file (memfd), `disk` a file created already deleted
in $TMPDIR or the run folder, mapped into memory (the page cache keeps the hot part in RAM).
Neither has a name, so no stop, not even `kill -9`, leaves one behind; other processes of the
node open it through /proc/PID/fd of its owner. Disk space is reserved when the file is made,
so a full disk shows at start as a message, never as a crash in a worker. `auto` picks
RAM when the frames fit RAM_SHARE of the memory this job may still use (its cgroup's limit
included), else disk when they fit the free space, else none.

Frames are written once, by whichever worker first decodes them (in the first epoch), then
only read: within an epoch each sample goes to one rank, so a frame is never read while it is
written (the rare padding duplicate writes the same bytes).
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.errors import UserError, display_path

RAM_SHARE = 0.5  # of the memory still available to this job
DISK_MARGIN = 1 << 30  # bytes left free on a disk after the cache
_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class CachePlan:
    mode: str  # ram, disk or none
    folder: Path | None  # where a disk cache lives
    reason: str  # why, in words, for the one line that announces it


def memory_available() -> int:
    """Bytes this process may still allocate: the kernel's MemAvailable, lowered by the
    memory limit of its cgroup (SLURM confines jobs to one) when there is one."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return min(available, _cgroup_headroom())


def _cgroup_headroom() -> int:
    """The limit of this process's cgroup less what it uses (v2 or v1); huge when none."""
    unlimited = 1 << 62
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return unlimited
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit, usage = base / "memory.max", base / "memory.current"
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit, usage = base / "memory.limit_in_bytes", base / "memory.usage_in_bytes"
        else:
            continue
        try:
            text = limit.read_text().strip()
            if text == "max":
                return unlimited
            return max(0, int(text) - int(usage.read_text()))
        except (OSError, ValueError):
            return unlimited
    return unlimited


def size_text(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def plan_cache(requested: str, nbytes: int, run_dir: Path) -> CachePlan:
    """Where `nbytes` of frames go under `--cache requested` (auto, ram, disk, none)."""
    if requested == "none":
        return CachePlan("none", None, "--cache none")
    available = memory_available()
    if requested in ("auto", "ram") and nbytes <= RAM_SHARE * available:
        return CachePlan("ram", None, f"{size_text(available)} of memory available to this job")
    if requested == "ram":
        raise UserError(
            f"--cache ram: the decoded frames take {size_text(nbytes)}, more than half of the "
            f"{size_text(available)} of memory available to this job",
            fix="use --cache auto (disk when RAM is short) or --cache disk, or a smaller "
            "--image-hw",
        )
    for folder in (Path(tempfile.gettempdir()), run_dir):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if nbytes + DISK_MARGIN <= free:
            why = "" if requested == "disk" else f"over half of {size_text(available)} of memory; "
            return CachePlan(
                "disk", folder, f"{why}{size_text(free)} free in {display_path(folder)}"
            )
    if requested == "disk":
        raise UserError(
            f"--cache disk: the decoded frames take {size_text(nbytes)}; neither $TMPDIR nor "
            "the run folder has that much free space (plus 1 GB)",
            fix="use --cache none, free some space, or set TMPDIR to a larger disk",
        )
    return CachePlan(
        "none",
        None,
        f"the frames take {size_text(nbytes)}: over half of the {size_text(available)} of memory "
        "available, and over the free space of $TMPDIR and the run folder",
    )


def _layout(count: int, shape: tuple[int, int, int], dtype: np.dtype[Any]) -> tuple[int, int]:
    """(offset of the frames, whole size): a page of flags first, one byte per frame."""
    start = -(-count // _PAGE) * _PAGE
    return start, start + count * int(np.prod(shape)) * dtype.itemsize


class FrameCache:
    """`count` frames of `shape` (C, H, W) and `dtype` (uint8, or uint16 for 16-bit models)
    in a shared file mapping."""

    def __init__(
        self, fd: int, count: int, shape: tuple[int, int, int], dtype: Any = np.uint8
    ) -> None:
        """Map the buffer open as `fd` in this process (which then owns and closes `fd`)."""
        self.fd, self.count, self.shape, self.owner = fd, count, shape, os.getpid()
        self.dtype = np.dtype(dtype)
        start, size = _layout(count, shape, self.dtype)
        self._map = mmap.mmap(fd, size)
        weakref.finalize(self, os.close, fd)  # the mapping goes with the arrays that use it
        self.flags = np.frombuffer(self._map, np.uint8, count)
        self.frames = np.frombuffer(self._map, self.dtype, count * int(np.prod(shape)), start)
        self.frames = self.frames.reshape(count, *shape)

    @classmethod
    def create(
        cls, plan: CachePlan, count: int, shape: tuple[int, int, int], dtype: Any = np.uint8
    ) -> FrameCache:
        _, size = _layout(count, shape, np.dtype(dtype))
        if plan.mode == "ram":
            fd = os.memfd_create("yogo-frames")
            os.ftruncate(fd, size)  # memory is taken as frames arrive (the plan checked it)
            return cls(fd, count, shape, dtype)
        assert plan.folder is not None
        fd = _deleted_file(plan.folder)
        try:
            os.posix_fallocate(fd, 0, size)  # space reserved now: no SIGBUS in a worker later
        except OSError as e:
            os.close(fd)
            raise UserError(
                f"--cache disk: could not reserve {size_text(size)} in "
                f"{display_path(plan.folder)} ({e.strerror})",
                fix="use --cache none, or set TMPDIR to a larger disk",
            ) from None
        return cls(fd, count, shape, dtype)

    def handle(self) -> tuple[int, int]:
        """What another process of this node needs to open the same buffer."""
        return (self.owner, self.fd)

    @classmethod
    def open(
        cls, handle: tuple[int, int], count: int, shape: tuple[int, int, int], dtype: Any = np.uint8
    ) -> FrameCache:
        owner, fd = handle
        return cls(os.open(f"/proc/{owner}/fd/{fd}", os.O_RDWR), count, shape, dtype)

    def get(self, i: int) -> np.ndarray | None:
        return self.frames[i] if self.flags[i] else None

    def put(self, i: int, frame: np.ndarray) -> None:
        self.frames[i] = frame
        self.flags[i] = 1

    @property
    def filled(self) -> int:
        return int(np.count_nonzero(self.flags))

    def __getstate__(self) -> dict[str, Any]:
        """Loader workers started by spawn/forkserver open the buffer again (fork shares it)."""
        return {
            "handle": (self.owner, self.fd),
            "count": self.count,
            "shape": self.shape,
            "dtype": self.dtype.str,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        owner, fd = state["handle"]
        mine = os.open(f"/proc/{owner}/fd/{fd}", os.O_RDWR)
        self.__init__(mine, state["count"], state["shape"], state["dtype"])  # type: ignore[misc]


def _deleted_file(folder: Path) -> int:
    """A read-write file in `folder` that no name points to (gone when closed)."""
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (OSError, AttributeError):  # a file system without O_TMPFILE
        fd, name = tempfile.mkstemp(prefix=".yogo-frames-", dir=folder)
        os.unlink(name)
        return fd
