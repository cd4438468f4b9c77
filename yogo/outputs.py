"""Files yogo writes, under one set of rules (docs/outputs.md):

- an existing file is never replaced unless the user said `--force`;
- one of the command's own inputs is never replaced, even with `--force`;
- all of this, and that the folder can be written, is checked before any work;
- files are written atomically (a reader sees the old file or the new one) and get the
  permissions the umask gives, like any file a user's program creates.

    require_output_file(Path("report.json"), force=False, inputs=[ddf_path], option="--json")
    require_output_folder(Path("runs"), option="--output-dir")
    write_atomic(Path("report.json"), text)     # or `with atomic_path(path) as partial:`

No torch here: `yogo check` uses it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from yogo.errors import UserError


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file (links and relative paths included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def require_output_file(
    path: Path,
    *,
    force: bool,
    inputs: Iterable[Path] = (),
    option: str = "",
    create_folder: bool = False,
) -> None:
    """`path` may be written: not a folder, in a folder that exists (or with `create_folder`,
    one `mkdir -p` would make) and can be written, not one of `inputs` (never, not even with
    --force), and new unless `force`."""
    named = f"{option}: " if option else ""
    if path.is_dir():
        raise UserError(f"{named}is a folder; give a file name", path=path)
    for source in inputs:
        if path.exists() and same_file(path, source):
            raise UserError(
                f"{named}is an input of this command; yogo never replaces its inputs, "
                "not even with --force",
                path=path,
                fix="give another file name",
            )
    require_output_folder(path.parent, option=option, create=create_folder)
    if path.exists() and not force:
        raise UserError(
            f"{named}already exists",
            path=path,
            fix="give another file name, or --force to replace it",
        )


def require_output_folder(folder: Path, *, option: str = "", create: bool = True) -> None:
    """Files can be written in `folder`, or (with `create`) in the folder `mkdir -p` would
    make. Tried for real (root ignores permission bits; read-only mounts do not show in
    them): a probe file is created and removed."""
    named = f"{option}: " if option else ""
    existing = folder
    while not existing.exists():
        if not create:
            raise UserError(
                f"{named}the folder does not exist",
                path=folder,
                fix="create it, or give another path",
            )
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{named}is a file, not a folder", path=existing, fix="give a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".yogo-write-test-", dir=existing)
    except OSError as e:
        raise UserError(
            f"{named}cannot write here: {e.strerror or e}",
            path=existing,
            fix="choose a folder you can write to",
        ) from None
    os.close(handle)
    os.unlink(probe)


def open_new(path: Path) -> int:
    """A new file created exclusively, with the umask's permissions (tempfile's are 0600)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


PARTIAL = ".partial"  # in the name of every file yogo writes before renaming it into place


def partial_path(path: Path) -> Path:
    """The temporary name `path` is written under: hidden, this process's, with `path`'s
    suffix (`.last.1234.partial.pth`), so writers that go by the suffix write the same format."""
    return path.with_name(f".{path.stem}.{os.getpid()}{PARTIAL}{path.suffix}")


def is_partial(name: str) -> bool:
    """Whether a file name is one of `partial_path`'s (or an older yogo's `.last.pth.partial`):
    what a process killed during a write leaves behind."""
    return name.startswith(".") and PARTIAL in name


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete the temporary files killed writes left in `folder`; returns them."""
    stale = sorted(p for p in folder.iterdir() if p.is_file() and is_partial(p.name))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """A new, empty temporary file beside `path` to write into; when the block ends without an
    error it is renamed to `path` (readers see the old file or the new one, never half of
    one), else removed. `durable`: fsync the file before and the folder after the rename,
    so the new file survives a power cut too (checkpoints)."""
    partial = partial_path(path)
    os.close(open_new(partial))
    try:
        yield partial
        if durable:
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(partial, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` through `atomic_path`."""
    with atomic_path(path, durable=durable) as partial:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)
