"""Files yogo writes, under one rule (docs/design.md, "Every file yogo writes"):

- planned: every output is named and checked before any work, so a refusal costs nothing;
- checked against every input: a file the command reads (the DDF, its includes, notes.json,
  the checkpoint, the frames) is never written, not even with `--force`, and nothing is
  written anywhere under a folder it reads data from (a DDF's image, label and thumbnail
  folders, the frames folder of `infer`): a stray file there would become data;
- an existing file is replaced only with `--force`, and a folder of outputs (`OutputSet`) is
  then replaced as a whole set, never left holding a mix of two runs;
- locked: one command at a time writes a folder of outputs (train's run folder likewise);
- atomic: written to a temporary file and renamed, so a reader, a full disk or a kill sees
  the old file or the new one; without `--force` the rename never replaces a file another
  process wrote meanwhile. Files get the permissions the umask gives.

    inputs = Inputs.of(ddf_path) | ddf_inputs(ddf_path)
    plan_file(Path("report.json"), force=False, inputs=inputs, option="--json")
    with OutputSet(out, "infer", files, force=cfg.force, inputs=inputs, option="--output-dir"):
        write_atomic(out / "predictions.json", text)   # or `with atomic_path(path) as partial:`

Writing a file that was not planned is a programming error (`UnplannedOutput`): a new option
cannot forget the rule. No torch here: `yogo check` uses it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from yogo.errors import UserError, display_path


class UnplannedOutput(RuntimeError):
    """yogo tried to write a file that no plan_file/plan_folder/OutputSet covers (a bug)."""


@dataclass(frozen=True)
class Inputs:
    """What a command reads: `files` are never written, and nothing is written anywhere under
    `folders` (the folders it reads data from)."""

    files: tuple[Path, ...] = ()
    folders: tuple[Path, ...] = ()

    @classmethod
    def of(cls, *files: str | os.PathLike[str] | None, folders: Iterable[Path] = ()) -> Inputs:
        return cls(tuple(Path(f) for f in files if f), tuple(folders))

    def __or__(self, other: Inputs) -> Inputs:
        return Inputs(self.files + other.files, self.folders + other.folders)

    def refuse(self, path: Path, option: str = "") -> None:
        """Raise when writing `path` would replace an input or add to a data folder."""
        named = f"{option}: " if option else ""
        for source in self.files:
            if path.exists() and same_file(path, source):
                raise UserError(
                    f"{named}is an input of this command; yogo never replaces its inputs, "
                    "not even with --force",
                    path=path,
                    fix="give another file name",
                )
        target = os.path.realpath(path)
        for folder in self.folders:
            if _under(target, os.path.realpath(folder)):
                raise UserError(
                    f"{named}is inside {display_path(folder)}, a folder this command reads "
                    "data from; a file yogo wrote there would become data",
                    path=path,
                    fix="write it outside the data folders",
                )


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def as_inputs(inputs: Inputs | Iterable[Path]) -> Inputs:
    return inputs if isinstance(inputs, Inputs) else Inputs.of(*inputs)


# Planned outputs of this process: real path -> whether an existing file may be replaced.
_PLANNED_FILES: dict[str, bool] = {}
_PLANNED_FOLDERS: dict[str, bool] = {}


def plan_file(
    path: Path,
    *,
    force: bool,
    inputs: Inputs | Iterable[Path] = (),
    option: str = "",
    create_folder: bool = False,
) -> Path:
    """Check `path` (require_output_file) and allow it to be written; returns it."""
    require_output_file(
        path, force=force, inputs=inputs, option=option, create_folder=create_folder
    )
    _PLANNED_FILES[os.path.realpath(path)] = force
    return path


def plan_folder(
    folder: Path,
    *,
    replace: bool,
    inputs: Inputs | Iterable[Path] = (),
    option: str = "",
    create: bool = True,
) -> Path:
    """Check `folder` (require_output_folder, not under an input folder) and allow every file
    under it to be written; `replace`: existing files there may be replaced."""
    as_inputs(inputs).refuse(folder, option)
    require_output_folder(folder, option=option, create=create)
    _PLANNED_FOLDERS[os.path.realpath(folder)] = replace
    return folder


def may_replace(path: Path) -> bool:
    """Whether the plan lets `path` replace an existing file; UnplannedOutput if no plan
    covers it."""
    real = os.path.realpath(path)
    if real in _PLANNED_FILES:
        return _PLANNED_FILES[real]
    covering = [f for f in _PLANNED_FOLDERS if _under(real, f)]
    if not covering:
        raise UnplannedOutput(f"{path} was written without a plan (yogo.outputs)")
    return _PLANNED_FOLDERS[max(covering, key=len)]


def forget_plans() -> None:
    """Drop every plan (between commands run in one process, e.g. tests)."""
    _PLANNED_FILES.clear()
    _PLANNED_FOLDERS.clear()


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
    inputs: Inputs | Iterable[Path] = (),
    option: str = "",
    create_folder: bool = False,
) -> None:
    """`path` may be written: not a folder, in a folder that exists (or with `create_folder`,
    one `mkdir -p` would make) and can be written, not one of `inputs` nor under one of their
    folders (never, not even with --force), and new unless `force`."""
    named = f"{option}: " if option else ""
    if path.is_dir():
        raise UserError(f"{named}is a folder; give a file name", path=path)
    as_inputs(inputs).refuse(path, option)
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
    while not existing.exists() and not existing.is_symlink():
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


@contextlib.contextmanager
def partial_folder(path: Path) -> Iterator[Path]:
    """A new hidden work folder beside `path` (`.model.1234.partial.work`), for outputs built
    from several intermediate files; removed when the block ends, however it ends. Built
    beside the output, the finished file is moved into place by a rename, not copied."""
    folder = path.with_name(f".{path.stem}.{os.getpid()}{PARTIAL}.work")
    try:
        folder.mkdir()
        yield folder
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise _write_failed(path, e) from e
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete the temporary files (and work folders) killed writes left in `folder`; returns
    them."""
    stale = sorted(p for p in folder.iterdir() if is_partial(p.name))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


# Write failures that are the disk's, not yogo's: a message (exit 2), never a traceback.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


class WriteFailed(UserError):
    """A file could not be written (disk full, quota, read-only); nothing was replaced."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"could not write it: {reason}",
            path=path,
            fix="free space (or raise the quota) and run again",
        )
        self.reason = reason


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """A new, empty temporary file beside `path` to write into; when the block ends without an
    error it is renamed to `path` (readers see the old file or the new one, never half of
    one), else removed. `durable`: fsync the file before and the folder after the rename,
    so the new file survives a power cut too (checkpoints). A full disk (or quota, or a
    read-only file system) raises WriteFailed, the previous file intact."""
    replace = may_replace(path)
    partial = partial_path(path)
    try:
        os.close(open_new(partial))
        yield partial
        if durable:
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
        _publish(partial, path, replace)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise _write_failed(path, e) from e
    finally:
        partial.unlink(missing_ok=True)


def _write_failed(path: Path, error: OSError) -> WriteFailed:
    """The disk's error writing `path`, as a message."""
    kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
    return WriteFailed(path, f"{error.strerror or error}; {kept}")


def _publish(partial: Path, path: Path, replace: bool) -> None:
    """Rename `partial` to `path`; unless `replace`, never over a file that exists now (one
    another process wrote since the plan was checked): a hard link fails if the name is
    taken, where a rename would silently replace it."""
    if replace:
        os.replace(partial, path)
        return
    try:
        os.link(partial, path)
        return
    except FileExistsError:
        pass
    except OSError as e:  # a file system without hard links: check, then rename
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if not path.exists():
            os.replace(partial, path)
            return
    raise UserError(
        "appeared while yogo was working (another process wrote it); it was kept",
        path=path,
        fix="give another name, or --force to replace it",
    )


def write_atomic(path: Path, data: str | bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` through `atomic_path`."""
    with atomic_path(path, durable=durable) as partial:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)


_LOCKS: set[int] = set()  # descriptors holding this process's folder locks


def hold_lock(fd: int) -> int:
    """Note `fd` as a lock this process holds (see `drop_inherited_locks`)."""
    _LOCKS.add(fd)
    return fd


def release_lock(fd: int) -> None:
    """Close `fd`, which releases its lock."""
    _LOCKS.discard(fd)
    os.close(fd)


def drop_inherited_locks() -> None:
    """In a forked child (a loader worker): close the lock descriptors it inherited. The
    parent keeps its locks; the child no longer shares them, so when the parent dies, even by
    kill -9, they are released at once instead of when the last orphaned worker exits."""
    for fd in list(_LOCKS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCKS.clear()


def try_lock(fd: int, place: Path, busy: Callable[[], UserError], take_care: str) -> int | None:
    """An exclusive `flock` on `fd`, held by this process (`hold_lock`) until the descriptor is
    closed or the process ends in any way. When another process holds it, `busy()` (called
    before `fd` is closed) is raised; on a file system without locks a warning asks the user
    to `take_care` and None is returned (`fd` closed)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        refusal = busy()
        os.close(fd)
        raise refusal from None
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF):
            raise
        logging.getLogger(__name__).warning(
            f"{display_path(place)}: this file system has no locks ({e.strerror}); {take_care}"
        )
        return None
    return hold_lock(fd)


def lock_folder(folder: Path, what: str) -> int | None:
    """`try_lock` on `folder` itself (no lock file to leave behind)."""
    return try_lock(
        os.open(folder, os.O_RDONLY | os.O_DIRECTORY),
        folder,
        lambda: UserError(
            f"another yogo command is writing {what} here",
            path=folder,
            fix="wait for it to end, or choose another folder",
        ),
        "make sure one command at a time writes here",
    )


class OutputSet:
    """The files one command writes into `folder`, as one set (`infer --output-dir`, `test
    --plots`): checked before the work, the folder locked while the block runs, and listed in
    a manifest (`.NAME.yogo-files`) before they are written. With `--force`, the files the
    previous set listed are removed first, so the folder never holds a mix of two runs;
    without it, no file of the set may exist.

        with OutputSet(out, "infer", files, force=..., inputs=..., option="--output-dir") as s:
            s.extend(more_files)     # names known only after the work (listed before written)
            write_atomic(out / "predictions.json", text)
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        files: Sequence[Path],
        *,
        force: bool,
        inputs: Inputs,
        option: str,
        subfolders: Sequence[Path] = (),
    ) -> None:
        self.folder, self.force, self.inputs, self.option = folder, force, inputs, option
        self.manifest = folder / f".{name}.yogo-files"
        self.files = list(files)
        self.subfolders = list(subfolders)  # folders of the set whose files are named later
        plan_folder(folder, replace=force, inputs=inputs, option=option)
        for path in self.files:
            inputs.refuse(path, option)
        for sub in self.subfolders:
            if sub.exists() and not sub.is_dir():
                raise UserError(
                    f"{option}: is a file, where yogo writes a folder",
                    path=sub,
                    fix="move the file away, or choose another folder",
                )
        self._require_new()
        self._fd: int | None = None

    def _require_new(self) -> None:
        if self.force:
            return
        existing = [p for p in self.files if p.exists()]
        existing += [p for sub in self.subfolders if sub.is_dir() for p in sub.iterdir()]
        if existing:
            shown = ", ".join(display_path(p) for p in existing[:3])
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            raise UserError(
                f"{self.option}: already holds {len(existing)} file(s) this command would "
                f"write ({shown}{more})",
                path=self.folder,
                fix=f"choose another {self.option}, or --force to replace them",
            )

    def __enter__(self) -> OutputSet:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd = lock_folder(self.folder, f"{self.option} files")
        try:
            self._require_new()  # again, under the lock
            if self.force:
                self._remove_previous()
            self._write_manifest()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            release_lock(self._fd)
            self._fd = None

    def extend(self, files: Sequence[Path]) -> None:
        """Add files to the set; the manifest lists them before they are written."""
        self.files += files
        self._write_manifest()

    def _remove_previous(self) -> None:
        """Remove the files the previous set's manifest lists (never an input)."""
        try:
            listed = json.loads(self.manifest.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            listed = []
        for name in listed:
            path = self.folder / str(name)
            if ".." in Path(name).parts or not path.is_file():
                continue
            try:
                self.inputs.refuse(path)
            except UserError:
                continue
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # a sub-folder of the set left empty goes too
                if path.parent != self.folder:
                    path.parent.rmdir()

    def _write_manifest(self) -> None:
        names = sorted({os.path.relpath(p, self.folder) for p in self.files})
        text = json.dumps({"written_by": "yogo", "files": names}, indent=0) + "\n"
        _PLANNED_FILES[os.path.realpath(self.manifest)] = True
        write_atomic(self.manifest, text)
