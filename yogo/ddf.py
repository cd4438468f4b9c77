"""Dataset definition files (DDF): YAML -> a resolved, validated, split DatasetDefinition.

    ddf = DatasetDefinition.from_yaml("dataset_defs/run.yml")
    ddf.class_names              # ('healthy', 'ring', ...)
    ddf.splits["train"]          # tuple of Sample(image, label), sorted by label path

Format and rules: docs/dataset-definition.md. Every mistake is a UserError that names
the file and line. Splits are decided by a hash of each label file's path relative to the
top-level DDF's folder, so they are the same in every process, whatever the hash seed, listing
order or machine, and adding files moves only the files near a split boundary.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from yogo.data.images import child_paths, index_images
from yogo.errors import UserError, display_path, where
from yogo.outputs import Inputs
from yogo.yamlfile import Node, load_yaml

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TOP_KEYS = (
    "class_names",
    "dataset_paths",
    "test_paths",
    "dataset_split_fractions",
    "thumbnail_augmentation",
)
FOLDER_KEYS = ("image_path", "label_path")
INCLUDE_KEY = "defn_path"
SPECIMEN_KEY = "specimen"  # folder pairs with the same value are one specimen for --folds
FRACTION_TOLERANCE = 1e-6
# Keys people write because other tools (or YOGO's own docs) use them; each maps to ours.
KNOWN_MISSPELLINGS = {
    "test_dataset_paths": "test_paths",
    "classes": "class_names",
    "names": "class_names",
    "split_fractions": "dataset_split_fractions",
    "train_paths": "dataset_paths",
    "images": "image_path",
    "labels": "label_path",
    "image_dir": "image_path",
    "label_dir": "label_path",
}


@dataclass(frozen=True)
class FolderPair:
    """An image folder and its label folder (resolved), and where the DDF declared them."""

    image_path: Path
    label_path: Path
    source: Path  # the DDF that lists them
    line: int
    name: str  # "dataset_paths.run1"
    specimen: str | None = None  # its `specimen:` key; None: a specimen of its own

    @property
    def group(self) -> str:
        """The specimen this pair's frames belong to (`yogo train --folds` never splits one)."""
        return self.specimen if self.specimen is not None else f"{self.source}#{self.name}"


@dataclass(frozen=True)
class Sample:
    """One label file and its image (None when no image in `image_folder` has the label's
    stem)."""

    image: Path | None
    label: Path
    image_folder: Path


@dataclass(frozen=True)
class SplitFractions:
    train: float
    val: float
    test: float

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class DatasetDefinition:
    """A dataset definition with includes flattened, folders listed and splits decided."""

    path: Path
    class_names: tuple[str, ...]
    dataset_paths: tuple[FolderPair, ...]
    test_paths: tuple[FolderPair, ...]
    split_fractions: SplitFractions
    thumbnail_augmentation: dict[str, tuple[Path, ...]]
    splits: dict[str, tuple[Sample, ...]]
    unlabelled_images: tuple[Path, ...]
    ambiguous_images: dict[Path, tuple[Path, ...]]  # chosen image -> all with that stem
    warnings: tuple[str, ...]
    files: tuple[Path, ...]  # this file and every file it includes

    def inputs(self) -> Inputs:
        """Everything a command reading this DDF reads (yogo.outputs): the DDFs, each label
        folder's notes.json, and the image, label and thumbnail folders."""
        return _inputs(
            self.files, [*self.dataset_paths, *self.test_paths], self.thumbnail_augmentation
        )

    def require_classes(self, names: Sequence[str], whose: str, fix: str) -> None:
        """A UserError unless this DDF lists `names` in that order (`whose`: "the model's")."""
        if tuple(self.class_names) != tuple(names):
            raise UserError(
                f"{whose} classes [{', '.join(names)}] differ from the DDF's "
                f"[{', '.join(self.class_names)}]",
                path=self.path,
                fix=fix,
            )

    @property
    def samples(self) -> tuple[Sample, ...]:
        """Every sample of every split, sorted by label path."""
        return _sorted([s for split in self.splits.values() for s in split])

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike[str],
        split_override: Sequence[float] | None = None,
        folds: tuple[int, int] | None = None,
    ) -> DatasetDefinition:
        """Load, validate and split `path`.

        `split_override` (train, val, test) re-splits the union of all data, test paths
        included, as `--dataset-split-override` does. `folds` (K, I): dataset_paths is cut
        into K folds by specimen (`specimen_folds`); fold I is val, the others train, and test
        is test_paths alone (`yogo train --folds K --fold I`).
        """
        return _Loader(Path(path)).load(split_override, folds)


def ddf_inputs(path: str | os.PathLike[str]) -> Inputs:
    """`DatasetDefinition.inputs` without listing the folders: what to protect, known before
    any work (a DDF that does not load raises its UserError here)."""
    loader = _Loader(Path(path))
    _, pool, tests, _, thumbnails = loader.parse()
    return _inputs(tuple(loader.files), [*pool, *tests], thumbnails)


def _inputs(
    files: Sequence[Path], pairs: Sequence[FolderPair], thumbnails: dict[str, tuple[Path, ...]]
) -> Inputs:
    notes = {p.label_path.parent / "notes.json" for p in pairs}
    folders = {f for p in pairs for f in (p.image_path, p.label_path)}
    folders |= {f for group in thumbnails.values() for f in group}
    return Inputs((*files, *sorted(notes)), tuple(sorted(folders)))


def parse_split_override(
    values: Sequence[float], flag: str = "--dataset-split-override"
) -> SplitFractions:
    """Validate TRAIN VAL TEST fractions given as `flag`, in the flag's words."""
    if len(values) != 3:
        raise UserError(f"{flag} takes three fractions (TRAIN VAL TEST), got {len(values)}")
    for name, value in zip(SPLITS, values, strict=True):
        if not 0 <= value <= 1:
            raise UserError(f"{flag}: {name} must be in [0, 1], got {value:g}")
    if abs(sum(values) - 1) > FRACTION_TOLERANCE:
        raise UserError(
            f"{flag}: fractions must sum to 1, got {' + '.join(f'{v:g}' for v in values)}"
            f" = {sum(values):g}"
        )
    return SplitFractions(*values)


def ddf_text(
    comment: str,
    class_names: Sequence[str],
    fractions: SplitFractions,
    folders: Sequence[tuple[str, str, str]],
    test_folders: Sequence[tuple[str, str, str]] = (),
) -> str:
    """A DDF as yogo writes one (`yogo synth`, `yogo infer --save-preds`, `yogo audit
    --apply`): `folders` (and `test_folders`, its test_paths) are (name, image_path,
    label_path), paths absolute or relative to the DDF's folder."""
    names = ", ".join(json.dumps(name) for name in class_names)
    train, val, test = fractions.train, fractions.val, fractions.test
    lines = [
        f"# {comment}",
        f"class_names: [{names}]",
        f"dataset_split_fractions: {{train: {train:g}, val: {val:g}, test: {test:g}}}",
        "dataset_paths:",
    ]
    for key, entries in (("dataset_paths", folders), ("test_paths", test_folders)):
        if key == "test_paths" and entries:
            lines.append("test_paths:")
        for name, image_path, label_path in entries:
            lines += [
                f"  {_yaml_text(name)}:",
                f"    image_path: {_yaml_text(image_path)}",
                f"    label_path: {_yaml_text(label_path)}",
            ]
    return "\n".join(lines) + "\n"


def _yaml_text(text: str) -> str:
    """`text` as a YAML scalar: bare when it is a plain path, else a JSON (YAML) string."""
    return text if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./~+-]*", text) else json.dumps(text)


def split_counts(total: int, fractions: SplitFractions) -> tuple[int, int, int]:
    """Split sizes that sum to `total`, never negative; a fraction of 0 gives an empty split.

    Floors first, then the largest remainders get the leftover samples (ties: train, val, test).
    """
    wanted = [total * f for f in (fractions.train, fractions.val, fractions.test)]
    counts = [int(w) for w in wanted]
    by_remainder = sorted(range(3), key=lambda i: -(wanted[i] - counts[i]))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts[0], counts[1], counts[2]


def _by_label(sample: Sample) -> str:
    return str(sample.label)


def _suggest(key: str, allowed: Sequence[str]) -> str:
    hint = KNOWN_MISSPELLINGS.get(key)
    if hint not in allowed:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = close[0] if close else None
    choices = ", ".join(allowed)
    return f"did you mean '{hint}'? (allowed: {choices})" if hint else f"allowed: {choices}"


@dataclass
class _File:
    """One parsed DDF file: its resolved path and top-level keys."""

    path: Path
    keys: dict[str, Node]
    class_names: tuple[str, ...]
    class_names_line: int


class _Loader:
    """Walks the include tree once: validation, cycle/duplicate checks, folder listing."""

    def __init__(self, path: Path) -> None:
        self.top_path = path
        self.warnings: list[str] = []
        self.seen: dict[tuple[str, Path, Path], str] = {}  # where each pair or include was
        self.unlabelled: list[Path] = []
        self.ambiguous: dict[Path, tuple[Path, ...]] = {}
        self.top: _File | None = None
        self.files: list[Path] = []

    def parse(
        self,
    ) -> tuple[
        _File, list[FolderPair], list[FolderPair], SplitFractions, dict[str, tuple[Path, ...]]
    ]:
        """The top file, its folder pairs (pool, test), fractions and thumbnail folders."""
        top = self.top = self.read(self.top_path)
        keys = top.keys
        if "dataset_paths" not in keys and "test_paths" not in keys:
            raise UserError(
                "needs dataset_paths (and optionally test_paths)",
                path=top.path,
                fix="add a dataset_paths: mapping of name -> {image_path, label_path}",
            )
        test_mode = "test_paths" in keys
        chain = (top.path,)
        if test_mode:
            pool = self.section(top, "dataset_paths", "dataset_paths", chain)
            tests = self.section(top, "test_paths", "test_paths", chain)
        else:
            pool = self.section(top, "dataset_paths", "all", chain)
            tests = []
        return top, pool, tests, self.fractions(top, test_mode), self.thumbnails(top)

    def load(
        self, split_override: Sequence[float] | None, folds: tuple[int, int] | None = None
    ) -> DatasetDefinition:
        top, pool, tests, fractions, thumbnails = self.parse()
        top_folder = top.path.parent
        per_pair = [self.list_samples([pair]) for pair in pool]
        listed_pool = [s for samples in per_pair for s in samples]
        listed_tests = self.list_samples(tests)
        if folds is not None:
            count, held_out = folds
            chosen = specimen_folds(top.path, pool, [len(s) for s in per_pair], count)
            sides: dict[bool, list[Sample]] = {True: [], False: []}
            for fold, samples in zip(chosen, per_pair, strict=True):
                sides[fold == held_out] += samples
            train, val, test = _sorted(sides[False]), _sorted(sides[True]), _sorted(listed_tests)
        elif split_override is not None:
            fractions = parse_split_override(split_override)
            train, val, test = _split(listed_pool + listed_tests, fractions, top_folder)
        else:
            train, val, test = _split(listed_pool, fractions, top_folder)
            test = _sorted(test + tuple(listed_tests))
        for warning in self.warnings:
            log.warning(warning)
        return DatasetDefinition(
            path=top.path,
            class_names=top.class_names,
            dataset_paths=tuple(pool),
            test_paths=tuple(tests),
            split_fractions=fractions,
            thumbnail_augmentation=thumbnails,
            splits={"train": train, "val": val, "test": test},
            unlabelled_images=tuple(self.unlabelled),
            ambiguous_images=self.ambiguous,
            warnings=tuple(self.warnings),
            files=tuple(self.files),
        )

    # --- reading and validating one file -------------------------------------------------

    def read(self, path: Path) -> _File:
        root = load_yaml(path)
        resolved = path.resolve()
        self.files.append(path)
        keys = root.mapping(path, "a dataset definition")
        for key, node in keys.items():
            if key not in TOP_KEYS:
                raise UserError(
                    f"unknown key '{key}'",
                    path=path,
                    line=node.key_line,
                    fix=_suggest(key, TOP_KEYS),
                )
        if "class_names" not in keys:
            raise UserError(
                "class_names is required",
                path=path,
                fix="add class_names: [name0, name1, ...] (index i is label id i)",
            )
        node = keys["class_names"]
        if not isinstance(node.value, list) or not node.value:
            raise UserError(
                f"class_names must be a non-empty list, got {node.kind}",
                path=path,
                line=node.line,
                fix="class_names: [name0, name1, ...] (index i is label id i)",
            )
        class_names: list[str] = []
        for item in node.value:
            name = item.text(path, "each class name")
            if name in class_names:
                raise UserError(f"class name '{name}' is listed twice", path=path, line=item.line)
            class_names.append(name)
        return _File(resolved, keys, tuple(class_names), node.line)

    def section(
        self, file: _File, key: str, mode: str, chain: tuple[Path, ...]
    ) -> list[FolderPair]:
        """The folder pairs `file` contributes from its `key` section (`mode`: which sections
        of included files count: "dataset_paths", "test_paths", or "all" without test_paths)."""
        if key not in file.keys:
            return []
        specs = file.keys[key].mapping(file.path, key)
        if not specs:
            raise UserError(f"{key} is empty", path=file.path, line=file.keys[key].line)
        pairs: list[FolderPair] = []
        for name, spec_node in specs.items():
            spec = spec_node.mapping(file.path, f"{key}.{name}")
            place = f"{where(file.path, spec_node.key_line)} ({key}.{name})"
            for spec_key, value in spec.items():
                if spec_key not in (*FOLDER_KEYS, INCLUDE_KEY, SPECIMEN_KEY):
                    raise UserError(
                        f"unknown key '{spec_key}' in {key}.{name}",
                        path=file.path,
                        line=value.key_line,
                        fix=_suggest(spec_key, (*FOLDER_KEYS, INCLUDE_KEY, SPECIMEN_KEY)),
                    )
            if INCLUDE_KEY in spec:
                if SPECIMEN_KEY in spec:
                    raise UserError(
                        f"{key}.{name} includes a DDF and has a specimen key",
                        path=file.path,
                        line=spec[SPECIMEN_KEY].key_line,
                        fix="put specimen: on the folder pairs of the included DDF",
                    )
                if set(spec) & set(FOLDER_KEYS):
                    raise UserError(
                        f"{key}.{name} has both defn_path and image_path/label_path",
                        path=file.path,
                        line=spec_node.key_line,
                        fix="split it into two entries: one include, one folder pair",
                    )
                pairs += self.include(file, key, name, spec[INCLUDE_KEY], mode, chain)
                continue
            missing = [k for k in FOLDER_KEYS if k not in spec]
            if missing:
                raise UserError(
                    f"{key}.{name} needs {' and '.join(missing)}",
                    path=file.path,
                    line=spec_node.key_line,
                    fix="give image_path and label_path folders, or defn_path to include a DDF",
                )
            image_path = self.folder(file, spec["image_path"], "image_path")
            label_path = self.folder(file, spec["label_path"], "label_path")
            self.once(
                ("pair", image_path, label_path),
                f"the folder pair {display_path(image_path)} + {display_path(label_path)} "
                "is listed twice",
                place,
                file.path,
                spec_node.key_line,
                "remove one of them (each image/label folder pair may appear once)",
            )
            specimen = (
                spec[SPECIMEN_KEY].text(file.path, f"{key}.{name}.{SPECIMEN_KEY}")
                if SPECIMEN_KEY in spec
                else None
            )
            pairs.append(
                FolderPair(
                    image_path, label_path, file.path, spec_node.key_line, f"{key}.{name}",
                    specimen,
                )
            )  # fmt: skip
        return pairs

    def once(
        self, key: tuple[str, Path, Path], what: str, place: str, path: Path, line: int, fix: str
    ) -> None:
        """Note that `key` (a folder pair, or an include in one mode) is listed at `place`;
        a second listing is an error naming both places."""
        if key in self.seen:
            raise UserError(
                f"{what}: at {self.seen[key]} and at {place}", path=path, line=line, fix=fix
            )
        self.seen[key] = place

    def include(
        self,
        file: _File,
        key: str,
        name: str,
        node: Node,
        mode: str,
        chain: tuple[Path, ...],
    ) -> list[FolderPair]:
        text = node.text(file.path, f"{key}.{name}.defn_path")
        child_path = (file.path.parent / Path(text).expanduser()).resolve()
        if child_path in chain:
            cycle = " -> ".join(display_path(p) for p in (*chain, child_path))
            raise UserError(
                f"include cycle: {cycle}",
                path=file.path,
                line=node.line,
                fix="includes must form a tree; remove one defn_path of the cycle",
            )
        place = f"{where(file.path, node.line)} ({key}.{name})"
        self.once(
            (mode, child_path, child_path),
            f"{display_path(child_path)} is included twice",
            place,
            file.path,
            node.line,
            "include each dataset definition once",
        )
        if not child_path.is_file():
            what = "is a folder, not a YAML file" if child_path.is_dir() else "does not exist"
            raise UserError(
                f"defn_path '{text}' {what} (looked for {display_path(child_path)})",
                path=file.path,
                line=node.line,
                fix="paths are relative to the folder of the file that contains them",
            )
        child = self.read(child_path)
        assert self.top is not None
        if child.class_names != self.top.class_names:
            raise UserError(
                f"class_names differ from {display_path(self.top.path)}: "
                f"[{', '.join(child.class_names)}] here, [{', '.join(self.top.class_names)}] there",
                path=child.path,
                line=child.class_names_line,
                fix="every included file must list the same class_names in the same order",
            )
        if "thumbnail_augmentation" in child.keys:
            self.warnings.append(
                f"{where(child.path, child.keys['thumbnail_augmentation'].key_line)}: "
                "thumbnail_augmentation of an included file is not used; only the top-level "
                "file's applies"
            )
        sub_chain = (*chain, child_path)
        if mode == "all":
            pairs = self.section(child, "dataset_paths", mode, sub_chain)
            pairs += self.section(child, "test_paths", mode, sub_chain)
        else:
            pairs = self.section(child, mode, mode, sub_chain)
        if not pairs:
            wanted = "dataset_paths or test_paths" if mode == "all" else mode
            rule = (
                ""
                if mode == "all"
                else " (with test_paths at the top level, a file included under dataset_paths "
                "adds only its own dataset_paths, and under test_paths only its own test_paths)"
            )
            raise UserError(
                f"{display_path(child_path)} is included under {key} but has no {wanted} of "
                f"its own, so it would add no data{rule}",
                path=file.path,
                line=node.line,
                fix=f"add {wanted} to {display_path(child_path)} or include it elsewhere",
            )
        return pairs

    def folder(self, file: _File, node: Node, key: str) -> Path:
        """Resolve a folder relative to `file`'s folder, falling back to the working directory
        (where YOGO 1.0.1 looked) with a warning."""
        text = node.text(file.path, key)
        given = Path(text).expanduser()
        candidate = file.path.parent / given
        if candidate.is_dir():
            return candidate.resolve()
        if not given.is_absolute() and given.is_dir():
            self.warnings.append(
                f"{where(file.path, node.line)}: {key} '{text}' was found relative to the "
                f"working directory, not to {display_path(file.path.parent)}; write it relative "
                "to the DDF's folder or as an absolute path"
            )
            return given.resolve()
        raise UserError(
            f"{key} '{text}' {_not_a_folder(candidate)} (looked for {display_path(candidate)})",
            path=file.path,
            line=node.line,
            fix="paths are relative to the folder of the file that contains them",
        )

    def fractions(self, top: _File, test_mode: bool) -> SplitFractions:
        node = top.keys.get("dataset_split_fractions")
        if node is None:
            return SplitFractions(1.0, 0.0, 0.0)
        items = node.mapping(top.path, "dataset_split_fractions")
        values: dict[str, float] = {}
        for name, value_node in items.items():
            if name not in SPLITS:
                raise UserError(
                    f"unknown split '{name}' in dataset_split_fractions",
                    path=top.path,
                    line=value_node.key_line,
                    fix=_suggest(name, SPLITS),
                )
            if name == "test" and test_mode:
                raise UserError(
                    "dataset_split_fractions has 'test', but test_paths already defines the "
                    "test split",
                    path=top.path,
                    line=value_node.key_line,
                    fix="remove test from dataset_split_fractions (train and val split "
                    "dataset_paths), or remove test_paths",
                )
            text = value_node.text(top.path, f"dataset_split_fractions.{name}")
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not 0 <= value <= 1:
                raise UserError(
                    f"dataset_split_fractions.{name} must be a number in [0, 1], got '{text}'",
                    path=top.path,
                    line=value_node.line,
                )
            values[name] = value
        missing = [s for s in ("train", "val") if s not in values]
        if missing:
            raise UserError(
                f"dataset_split_fractions needs {' and '.join(missing)}",
                path=top.path,
                line=node.key_line,
                fix="give train and val (and test when there are no test_paths), summing to 1",
            )
        total = sum(values.values())
        if abs(total - 1) > FRACTION_TOLERANCE:
            terms = " + ".join(f"{k} {v:g}" for k, v in values.items())
            raise UserError(
                f"dataset_split_fractions must sum to 1, got {terms} = {total:g}",
                path=top.path,
                line=node.key_line,
            )
        return SplitFractions(values["train"], values["val"], values.get("test", 0.0))

    def thumbnails(self, top: _File) -> dict[str, tuple[Path, ...]]:
        node = top.keys.get("thumbnail_augmentation")
        if node is None:
            return {}
        result: dict[str, tuple[Path, ...]] = {}
        for name, value in node.mapping(top.path, "thumbnail_augmentation").items():
            if name not in top.class_names:
                raise UserError(
                    f"thumbnail_augmentation key '{name}' is not a class name",
                    path=top.path,
                    line=value.key_line,
                    fix=_suggest(name, top.class_names),
                )
            items = value.value if isinstance(value.value, list) else [value]
            folders = []
            for item in items:
                text = item.text(top.path, f"thumbnail_augmentation.{name}")
                folder = (top.path.parent / Path(text).expanduser()).resolve()
                if not folder.is_dir():
                    raise UserError(
                        f"thumbnail folder '{text}' {_not_a_folder(folder)} "
                        f"(looked for {display_path(folder)})",
                        path=top.path,
                        line=item.line,
                        fix="paths are relative to the folder of the file that contains them",
                    )
                folders.append(folder)
            result[name] = tuple(folders)
        return result

    # --- listing folders -------------------------------------------------------------------

    def list_samples(self, pairs: list[FolderPair]) -> list[Sample]:
        samples: list[Sample] = []
        for pair in pairs:
            with os.scandir(pair.label_path) as entries:
                named = [(e.name, e.is_file()) for e in entries if e.name.lower().endswith(".txt")]
            folder = pair.label_path
            names = sorted(name for name, is_file in named if is_file)
            labels = child_paths(folder, names)
            for path in sorted(folder / name for name, is_file in named if not is_file):
                # Say which entry and why, rather than only counting its image as unlabelled.
                what = "a folder" if path.is_dir() else "not a regular file"
                self.warnings.append(
                    f"{display_path(path)}: named like a label file but is {what}; not used"
                )
            if not labels:
                raise UserError(
                    f"label_path of {pair.name} ({display_path(pair.label_path)}) holds no "
                    "label files (*.txt)",
                    path=pair.source,
                    line=pair.line,
                    fix="point label_path at the folder of YOLO .txt label files",
                )
            index = index_images(pair.image_path)
            label_stems = [name[: -len(".txt")] for name in names]
            stems = set(label_stems)
            unlabelled = (p for s, p in index.by_stem.items() if s not in stems)
            self.unlabelled += sorted(unlabelled, key=str)
            for stem, paths in index.ambiguous.items():
                if stem in stems:
                    self.ambiguous[index.by_stem[stem]] = paths
            images = index.by_stem
            samples += [
                Sample(images.get(stem), path, pair.image_path)
                for stem, path in zip(label_stems, labels, strict=True)
            ]
        return samples


def specimen_folds(
    ddf_path: Path, pairs: Sequence[FolderPair], frames: Sequence[int], folds: int
) -> list[int]:
    """The fold (0..folds-1) of each folder pair: specimens (`FolderPair.group`), largest
    first, each to the fold with the fewest frames so far (ties: the lower fold; specimens of
    one size in name order: the `specimen:` value or the entry's name), so the folds are
    about equal and the same for every run."""
    sizes: dict[str, int] = {}
    names = {}
    for pair, n in zip(pairs, frames, strict=True):
        sizes[pair.group] = sizes.get(pair.group, 0) + n
        names[pair.group] = pair.specimen or pair.name
    if folds > len(sizes):
        raise UserError(
            f"--folds {folds} needs at least {folds} specimens, and dataset_paths holds "
            f"{len(sizes)} ({', '.join(sorted(names.values()))}): the frames of one specimen "
            "are never split "
            "between training and validation",
            path=ddf_path,
            fix=f"--folds {len(sizes)} or fewer, or list each specimen as its own "
            "dataset_paths entry (docs/dataset-definition.md, 'Folds by specimen')",
        )
    fold_frames = [0] * folds
    fold_of = {}
    for group in sorted(sizes, key=lambda g: (-sizes[g], names[g], g)):
        fold = fold_frames.index(min(fold_frames))
        fold_of[group] = fold
        fold_frames[fold] += sizes[group]
    return [fold_of[pair.group] for pair in pairs]


def _not_a_folder(path: Path) -> str:
    """Why `path`, which is not a folder, cannot be used as one."""
    if path.is_file():
        return "is a file, not a folder"
    return "is not a folder" if path.exists() else "does not exist"


def _split(
    samples: Sequence[Sample], fractions: SplitFractions, top_folder: Path
) -> tuple[tuple[Sample, ...], tuple[Sample, ...], tuple[Sample, ...]]:
    """Deterministic split: order samples by a hash of their label path relative to the
    top-level DDF's folder, cut by `split_counts`, return each split sorted by label path."""

    folders: dict[str, str] = {}

    def rank(sample: Sample) -> tuple[bytes, str]:
        # The label path relative to top_folder, as posix: its folder's part computed once.
        folder, _, name = str(sample.label).rpartition(os.sep)  # a listing's path: no trailing /
        folder = folder or os.sep
        if folder not in folders:
            relative = Path(os.path.relpath(folder, top_folder)).as_posix()
            folders[folder] = "" if relative == "." else relative + "/"
        key = folders[folder] + name
        return hashlib.blake2b(key.encode(), digest_size=8, person=b"yogo-split").digest(), key

    ordered = sorted(samples, key=rank)
    n_train, n_val, _ = split_counts(len(ordered), fractions)
    train, val = ordered[:n_train], ordered[n_train : n_train + n_val]
    test = ordered[n_train + n_val :]
    return _sorted(train), _sorted(val), _sorted(test)


def _sorted(samples: Sequence[Sample]) -> tuple[Sample, ...]:
    return tuple(sorted(samples, key=_by_label))
