"""Counts a lab can act on (docs/counting.md): per-class objectness thresholds chosen on the
validation split, calibrated confidences, and counts corrected with the validation confusion
matrix, each with a 95% interval.

    model = fit_count_model(val_metrics, source="data.yml val split")  # at the end of training
    model.thresholds                      # per class: its predicted count matches the truth
    model.calibrate(scores, classes)      # confidences that mean probabilities
    counts = model.correct(predicted, frames, ratios=[Ratio.parse("ring/healthy", names)])

A `CountModel` is plain data: it travels in the checkpoint (`counting`) and the ONNX metadata.
Checkpoints without one (older ones, YOGO 1.0.1) get `CountModel.default`: objectness 0.5,
confidences as the model gives them, raw counts without intervals.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.errors import UserError
from yogo.evaluation.metrics import DetectionMetrics, threshold_words
from yogo.model.checkpoint import Checkpoint

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
CALIBRATION_BINS = 15
BOOTSTRAP_DRAWS = 2000
JEFFREYS = 0.5  # the mean random pseudo-count added to each outcome of a bootstrap draw
THRESHOLD_FLOOR = 0.01  # the lowest objectness `yogo test` ranks (evaluate.AP_OBJECTNESS_FLOOR)
MIN_RECALL = 0.1  # a class counted right less often is not corrected (CountModel.countable)
PLATT_PRIOR = 20.0  # the pull of each class's calibration towards the fit of all classes


@dataclass(frozen=True)
class CountModel:
    """What turns a model's detections into counts: per class the objectness threshold and
    how it was chosen ("unbiased": the predicted count equals the true count on validation;
    "f1": F1-optimal where no threshold reaches the true count; "default": 0.5), the Platt
    scaling (a, b) of its confidence, and the validation confusion matrix per frame at those
    thresholds (rows true class then background, columns predicted class then missed)."""

    class_names: tuple[str, ...]
    thresholds: tuple[float, ...]
    rules: tuple[str, ...]
    platt: tuple[tuple[float, float], ...]
    confusion: np.ndarray | None  # (F, C + 1, C + 1) int; None: no correction possible
    source: str  # what it was fitted on, for the reports

    @staticmethod
    def default(class_names: Sequence[str]) -> CountModel:
        n = len(class_names)
        return CountModel(
            tuple(class_names),
            (DEFAULT_THRESHOLD,) * n,
            ("default",) * n,
            ((1.0, 0.0),) * n,
            None,
            "",
        )

    @property
    def fitted(self) -> bool:
        return self.confusion is not None

    def to_plain(self) -> dict[str, Any]:
        """Lists and numbers: a checkpoint's `counting` entry, JSON in the ONNX metadata."""
        return {
            "class_names": list(self.class_names),
            "thresholds": list(self.thresholds),
            "rules": list(self.rules),
            "platt": [list(p) for p in self.platt],
            "confusion": None if self.confusion is None else self.confusion.tolist(),
            "source": self.source,
        }

    @staticmethod
    def from_plain(plain: dict[str, Any], class_names: Sequence[str]) -> CountModel:
        """The inverse of `to_plain`, checked against the model's classes (ValueError)."""
        n = len(class_names)
        if tuple(plain["class_names"]) != tuple(class_names):
            raise ValueError("the counting entry does not match the model's classes")
        model = CountModel(
            tuple(str(c) for c in plain["class_names"]),
            tuple(float(t) for t in plain["thresholds"]),
            tuple(str(r) for r in plain["rules"]),
            tuple((float(a), float(b)) for a, b in plain["platt"]),
            None
            if plain["confusion"] is None
            else np.asarray(plain["confusion"], dtype=np.int64).reshape(-1, n + 1, n + 1),
            str(plain["source"]),
        )
        if not len(model.thresholds) == len(model.rules) == len(model.platt) == n:
            raise ValueError("the counting entry does not match the model's classes")
        if not all(0 <= t <= 1 for t in model.thresholds):
            raise ValueError(f"thresholds {model.thresholds} outside [0, 1]")
        return model

    def with_threshold(self, obj_thresh: float) -> CountModel:
        """One objectness threshold for every class (`--obj-thresh`). The validation
        confusion matrix was counted at the fitted thresholds, so there is no correction."""
        n = len(self.class_names)
        return CountModel(
            self.class_names, (obj_thresh,) * n, ("given",) * n, self.platt, None, self.source
        )

    def calibrate(self, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Confidences (objectness x class probability) of detections of `classes`, mapped
        through their class's Platt scaling."""
        platt = np.asarray(self.platt, dtype=np.float64).reshape(-1, 2)
        a, b = platt[classes, 0], platt[classes, 1]
        return _sigmoid(a * _logit(np.asarray(scores, dtype=np.float64)) + b)

    def describe(self) -> str:
        """The thresholds in words, for reports and log lines."""
        return threshold_words(self.class_names, self.thresholds)

    def correct(
        self,
        predicted: Sequence[int] | np.ndarray,
        frames: int,
        ratios: Sequence[Ratio] = (),
        seed: int = 0,
    ) -> Counts:
        """Raw counts of a specimen (`frames` frames) corrected with the validation confusion
        matrix, with 95% intervals from a bootstrap (docs/counting.md): validation frames are
        resampled (the matrix's own uncertainty) and the specimen's detections drawn again
        from the corrected counts (the mix-up in this specimen)."""
        raw = np.asarray(predicted, dtype=np.float64)
        if self.confusion is None or frames < 1:
            return Counts(self.class_names, raw, None, None, ratios, None, None)
        n = len(self.class_names)
        countable = self.countable()
        # The other classes' objects counted as countable ones are false detections here.
        confusion = _reduce(self.confusion, countable)
        mixing, false_rate = _mixing(confusion.sum(axis=0), len(confusion))
        estimate = np.full(n, np.nan)
        estimate[countable] = _solve(mixing, raw[countable] - frames * false_rate)
        rng = np.random.default_rng(seed)
        draws = np.full((BOOTSTRAP_DRAWS, n), np.nan)
        draws[:, countable] = _bootstrap(
            confusion, mixing, false_rate, estimate[countable], frames, rng
        )
        low, high = _basic_interval(estimate, draws)
        ratio_points = np.array([r.of(estimate) for r in ratios])
        ratio_draws = np.stack([r.of(draws) for r in ratios], axis=1) if ratios else None
        ratio_ci = _basic_interval(ratio_points, ratio_draws) if ratio_draws is not None else None
        return Counts(
            self.class_names,
            raw,
            np.clip(estimate, 0, None),
            np.stack([low, high], axis=1),
            ratios,
            ratio_points,
            None if ratio_ci is None else np.stack(ratio_ci, axis=1),
        )

    def countable(self) -> np.ndarray:
        """The classes whose counts can be corrected: some validation labels, of which the
        model counts at least MIN_RECALL as their class (below, the correction would divide
        by almost nothing). The others keep their raw count only."""
        if self.confusion is None:
            return np.zeros(len(self.class_names), dtype=bool)
        summed = self.confusion.sum(axis=0)
        n = len(self.class_names)
        labels = summed[:n].sum(axis=1)
        right = np.diag(summed)[:n]
        countable: np.ndarray = (labels > 0) & (right >= MIN_RECALL * np.maximum(labels, 1))
        return countable


def count_model_of(checkpoint: Checkpoint) -> CountModel:
    """The checkpoint's fitted CountModel, or the default for one without (older yogo
    checkpoints, YOGO 1.0.1 files)."""
    fix = "fit it again: yogo test CHECKPOINT DDF --fit-thresholds NEW.pth"
    plain = checkpoint.payload.get("counting")
    return read_count_model(plain, checkpoint.model_config.class_names, checkpoint.path, fix)


def read_count_model(
    plain: dict[str, Any] | None, class_names: Sequence[str], path: Path, fix: str
) -> CountModel:
    """A stored CountModel (a checkpoint's entry, an ONNX file's metadata), the default when
    there is none; a damaged one is a UserError naming `path`, with `fix`."""
    if plain is None:
        return CountModel.default(class_names)
    try:
        return CountModel.from_plain(plain, class_names)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"has a damaged counting entry ({type(e).__name__}: {e})", path=path, fix=fix
        ) from None


def thresholds_for(model: CountModel, obj_thresh: float | None) -> CountModel:
    """The model's counting, or with `--obj-thresh` one threshold for every class (saying
    that it replaces the model's and what that costs); a model without fitted thresholds
    gets its note."""
    if obj_thresh is None:
        if (note := old_checkpoint_note(model)) is not None:
            log.info(note)
        return model
    if model.fitted:
        log.info(
            f"--obj-thresh {obj_thresh:g} for every class instead of the model's "
            f"{model.describe()}: counts are not corrected"
        )
    return model.with_threshold(obj_thresh)


def old_checkpoint_note(model: CountModel) -> str | None:
    """What a user of a model without fitted thresholds should know, once."""
    if model.fitted or set(model.rules) != {"default"}:
        return None
    return (
        "this model has no thresholds fitted on validation (a checkpoint from before yogo "
        "fitted them, or YOGO 1.0.1): objectness 0.5 for every class, raw counts without "
        "intervals; fit them with yogo test CHECKPOINT DDF --fit-thresholds NEW.pth"
    )


@dataclass(frozen=True)
class Ratio:
    """`--ratio ring+trophozoite/healthy`: summed counts of some classes over others."""

    text: str
    numerator: tuple[int, ...]
    denominator: tuple[int, ...]

    @staticmethod
    def parse(text: str, class_names: Sequence[str]) -> Ratio:
        parts = text.split("/")
        fix = f"CLASS[+CLASS...]/CLASS[+CLASS...] with the classes {', '.join(class_names)}"
        if len(parts) != 2:
            raise UserError(f"--ratio {text!r} needs exactly one '/'", fix=fix)
        sides = []
        for part in parts:
            names = [n.strip() for n in part.split("+")]
            if not all(names):
                raise UserError(f"--ratio {text!r} has an empty class name", fix=fix)
            unknown = [n for n in names if n not in class_names]
            if unknown:
                raise UserError(
                    f"--ratio {text!r}: {', '.join(repr(n) for n in unknown)} is not a class "
                    "of this model",
                    fix=fix,
                )
            sides.append(tuple(class_names.index(n) for n in names))
        return Ratio(text, sides[0], sides[1])

    def of(self, counts: np.ndarray) -> np.ndarray:
        """The ratio of counts (..., C); nan where the denominator is 0."""
        top = counts[..., list(self.numerator)].sum(axis=-1)
        bottom = counts[..., list(self.denominator)].sum(axis=-1)
        out: np.ndarray = np.divide(
            top, bottom, out=np.full(np.shape(top), np.nan), where=bottom > 0
        )
        return out


@dataclass(frozen=True)
class Counts:
    """A specimen's counts per class: raw, corrected, and the corrected count's 95%
    interval (None without a fitted CountModel), and the requested ratios of corrected
    counts with theirs."""

    class_names: tuple[str, ...]
    raw: np.ndarray
    corrected: np.ndarray | None
    ci95: np.ndarray | None  # (C, 2)
    ratios: Sequence[Ratio]
    ratio_values: np.ndarray | None
    ratio_ci95: np.ndarray | None  # (R, 2)

    def to_plain(self) -> dict[str, Any]:
        per_class = {}
        n = len(self.class_names)
        corrected = np.full(n, np.nan) if self.corrected is None else self.corrected
        ci95 = np.full((n, 2), np.nan) if self.ci95 is None else self.ci95
        for i, name in enumerate(self.class_names):
            known = bool(np.isfinite(corrected[i]))
            per_class[name] = {
                "count": int(self.raw[i]),
                "count_corrected": _round(corrected[i]) if known else None,
                "count_ci95": [_round(v) for v in ci95[i]] if known else None,
            }
        ratios = {}
        for j, ratio in enumerate(self.ratios):
            value = None if self.ratio_values is None else self.ratio_values[j]
            ci = None if self.ratio_ci95 is None else self.ratio_ci95[j]
            ratios[ratio.text] = {
                "value": _finite(value),
                "ci95": None if ci is None or _finite(value) is None else [_finite(v) for v in ci],
            }
        return {"per_class": per_class, "ratios": ratios}


# --- fitting ---------------------------------------------------------------------------------


def fit_count_model(metrics: DetectionMetrics, source: str) -> CountModel:
    """Thresholds, calibration and the per-frame confusion matrix from a validation pass
    (`metrics` holds every detection ranked for AP, whatever its thresholds)."""
    names = metrics.class_names
    report = metrics.compute()
    num_true = np.array([report["per_class"][n]["num_true"] for n in names])
    candidates = metrics.detections_by_class(kept=False)
    thresholds, rules = choose_thresholds(
        [obj for obj, _, _ in candidates], [hit for _, _, hit in candidates], num_true
    )
    at = DetectionMetrics(names, thresholds)
    at.images = metrics.images
    kept = at.detections_by_class(kept=True)
    scores = np.concatenate([score for _, score, _ in kept])
    classes = np.concatenate([np.full(len(score), c) for c, (_, score, _) in enumerate(kept)])
    hits = np.concatenate([hit for _, _, hit in kept])
    platt = fit_platt(scores, classes, hits, len(names))
    return CountModel(names, thresholds, rules, platt, at.frame_confusions(), source)


def calibration_errors(
    metrics: DetectionMetrics, model: CountModel
) -> dict[str, dict[str, float | None]]:
    """ECE of the detections at `metrics`' thresholds, per class and overall ("all"), with
    the model's confidences before ("raw") and after ("calibrated") its Platt scaling."""
    kept = metrics.detections_by_class(kept=True)
    out: dict[str, dict[str, float | None]] = {}
    every: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for c, (_, score, hit) in enumerate(kept):
        calibrated = model.calibrate(score, np.full(len(score), c))
        every.append((score, calibrated, hit))
        out[metrics.class_names[c]] = {
            "raw": expected_calibration_error(score, hit),
            "calibrated": expected_calibration_error(calibrated, hit),
        }
    score, calibrated, hit = (np.concatenate(parts) for parts in zip(*every, strict=True))
    out["all"] = {
        "raw": expected_calibration_error(score, hit),
        "calibrated": expected_calibration_error(calibrated, hit),
    }
    return out


def choose_thresholds(
    objectness: Sequence[np.ndarray], hits: Sequence[np.ndarray], num_true: np.ndarray
) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Per class, from the objectness of its detections over the validation split (any
    order), whether each matches a label of the class, and its number of labels: the
    threshold that keeps exactly as many detections as there are labels ("unbiased", halfway
    between the last kept and the first dropped), else the F1-optimal one ("f1"), else 0.5
    for a class without labels ("default")."""
    thresholds, rules = [], []
    for obj, hit, n in zip(objectness, hits, num_true, strict=True):
        order = np.argsort(-obj, kind="stable")
        obj, hit, n = obj[order], hit[order], int(n)
        if n == 0:
            thresholds.append(DEFAULT_THRESHOLD)
            rules.append("default")
        elif len(obj) >= n:
            below = obj[n] if len(obj) > n else THRESHOLD_FLOOR
            thresholds.append(float(max(THRESHOLD_FLOOR, (obj[n - 1] + below) / 2)))
            rules.append("unbiased")
        else:
            tp = np.cumsum(hit)
            kept = np.arange(1, len(obj) + 1)
            f1 = 2 * tp / (kept + n)  # 2PR / (P + R) with P = tp/kept, R = tp/n
            best = int(np.argmax(f1)) if len(obj) else -1
            after = obj[best + 1] if 0 <= best < len(obj) - 1 else THRESHOLD_FLOOR
            threshold = (obj[best] + after) / 2 if best >= 0 else DEFAULT_THRESHOLD
            thresholds.append(float(max(THRESHOLD_FLOOR, threshold)))
            rules.append("f1")
    return tuple(thresholds), tuple(rules)


def fit_platt(
    scores: np.ndarray, classes: np.ndarray, hits: np.ndarray, num_classes: int
) -> tuple[tuple[float, float], ...]:
    """Per class (a, b) so that sigmoid(a logit(score) + b) is the chance that a detection
    is right: each class's own fit, shrunk towards the fit of all classes together by
    a penalty of weight PLATT_PRIOR (a rare class with few detections stays near it)."""
    pooled = np.array(_platt(scores, hits, np.array([1.0, 0.0]), 1.0))
    return tuple(
        _platt(scores[classes == c], hits[classes == c], pooled, PLATT_PRIOR)
        for c in range(num_classes)
    )


def _platt(
    scores: np.ndarray, hits: np.ndarray, prior: np.ndarray, ridge: float
) -> tuple[float, float]:
    """Logistic regression of `hits` on logit(`scores`) by damped Newton steps, with a
    penalty ridge/2 |theta - prior|^2."""
    x = _logit(scores)
    y = hits.astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    theta = prior.astype(np.float64).copy()

    def loss(t: np.ndarray) -> float:
        z = design @ t
        return float(np.sum(np.logaddexp(0, z) - y * z) + ridge / 2 * np.sum((t - prior) ** 2))

    for _ in range(100):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (p - y) + ridge * (theta - prior)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        before, scale = loss(theta), 1.0
        while loss(theta - scale * step) > before and scale > 1e-6:
            scale /= 2
        theta = theta - scale * step
        if np.abs(scale * step).max() < 1e-9:
            break
    return (float(theta[0]), float(theta[1]))


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> float | None:
    """ECE: over equal-width confidence bins, the detection-weighted mean of
    |fraction correct - mean confidence|. None without detections."""
    if len(confidence) == 0:
        return None
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mine = index == b
        if mine.any():
            total += mine.sum() * abs(correct[mine].mean() - confidence[mine].mean())
    return float(total / len(confidence))


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean confidence, fraction correct (nan when empty), count."""
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    conf = np.bincount(index, weights=confidence, minlength=bins)
    hit = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return conf / count, hit / count, count


# --- correction --------------------------------------------------------------------------------


def _reduce(confusion: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-frame confusion matrices (F, C + 1, C + 1) over the `keep` classes only: objects
    of the other classes counted as a kept one join the false detections (last row), kept
    objects counted as another class join the missed ones (last column)."""
    kept = np.flatnonzero(keep)
    other = np.setdiff1d(np.arange(confusion.shape[-1]), kept)
    k = len(kept)
    out = np.zeros((len(confusion), k + 1, k + 1), dtype=confusion.dtype)
    out[:, :k, :k] = confusion[:, kept][:, :, kept]
    out[:, :k, k] = confusion[:, kept][:, :, other].sum(axis=-1)
    out[:, k, :k] = confusion[:, other][:, :, kept].sum(axis=1)
    return out


def _mixing(confusion: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """From summed confusion matrices (..., C + 1, C + 1): P[..., i, j], the chance that an
    object of class i is counted as class j (its row over every outcome, misses included; a
    class without validation labels is taken as always counted right), and the false
    detections per frame counted as each class (..., C)."""
    n = confusion.shape[-1] - 1
    rows = confusion[..., :n, :].astype(np.float64)
    totals = rows.sum(axis=-1, keepdims=True)
    identity = np.broadcast_to(np.eye(n), rows[..., :n].shape)
    mixing = np.divide(rows[..., :n], totals, out=identity.copy(), where=totals > 0)
    false_rate = confusion[..., n, :n] / max(frames, 1)
    return mixing, false_rate


def _solve(mixing: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """True counts t with t @ P = observed (least squares where P is singular); stacks of
    problems (..., C, C) and (..., C) too."""
    solved: np.ndarray = np.einsum("...j,...jk->...k", observed, np.linalg.pinv(mixing))
    return solved


def _bootstrap(
    confusion: np.ndarray,
    mixing: np.ndarray,
    false_rate: np.ndarray,
    estimate: np.ndarray,
    frames: int,
    rng: np.random.Generator,
    draws: int = BOOTSTRAP_DRAWS,
) -> np.ndarray:
    """(draws, C) corrected counts of simulated repeats of the whole measurement: a
    resampled validation split, and a specimen holding `estimate` objects whose detections
    are drawn again (each object counted as each class or missed with P, false detections
    Poisson at the validation rate)."""
    n = mixing.shape[0]
    val_frames = len(confusion)
    full_rows = np.concatenate(
        [mixing, 1 - mixing.sum(axis=1, keepdims=True).clip(max=1)], axis=1
    ).clip(0, 1)
    observed = rng.poisson(frames * false_rate, size=(draws, n)).astype(np.float64)
    for i, objects in enumerate(np.round(np.clip(estimate, 0, None)).astype(np.int64)):
        row = full_rows[i] / full_rows[i].sum()
        observed += rng.multinomial(objects, row, size=draws)[:, :n]
    picks = rng.integers(0, val_frames, size=(draws, val_frames))
    counts = np.stack([np.bincount(p, minlength=val_frames) for p in picks])  # (draws, F)
    resampled = np.einsum("bf,fij->bij", counts, confusion).astype(np.float64)
    # Each outcome gets a random pseudo-count (Gamma(1/2): half a count on average), so an
    # outcome never seen on validation (a class never missed in 40 labels) is not certain
    # never to happen: its interval is not [n, n].
    outcomes = resampled[:, :n] + rng.gamma(JEFFREYS, size=resampled[:, :n].shape)
    again = outcomes[..., :n] / outcomes.sum(axis=-1, keepdims=True)
    rate = (resampled[:, n, :n] + rng.gamma(JEFFREYS, size=(draws, n))) / val_frames
    # a class the resample left without labels keeps the whole split's row
    empty = resampled[:, :n].sum(axis=-1) == 0
    again[empty] = np.broadcast_to(mixing, again.shape)[empty]
    return _solve(again, observed - frames * rate)


def _basic_interval(point: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The basic bootstrap 95% interval: the point minus the 97.5% and 2.5% quantiles of
    the draws' errors, never below 0."""
    errors = draws - point
    with warnings.catch_warnings():  # a class or ratio without a value: nan, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        low_q, high_q = np.nanquantile(errors, [0.025, 0.975], axis=0)
    return np.clip(point - high_q, 0, None), np.clip(point - low_q, 0, None)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    out: np.ndarray = np.log(p) - np.log1p(-p)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1 + np.tanh(x / 2))  # no overflow for large |x|
    return out


def _round(value: float) -> float:
    return round(float(value), 2)


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def ensemble_counting(model: CountModel, first: Path, views: int) -> CountModel:
    """The counting of several fused views (`--model`, `--tta`): the first model's thresholds,
    applied to the fused objectness; its calibration and count correction were fitted to its
    own scores alone, so they are dropped (raw counts), and a log line says so."""
    if not model.fitted and all(tuple(p) == (1.0, 0.0) for p in model.platt):
        return model
    log.info(
        f"{views} views fused: the thresholds are {first.name}'s; its calibration and count "
        "correction were fitted to its own scores, so counts are not corrected"
    )
    n = len(model.class_names)
    return dataclasses.replace(model, platt=((1.0, 0.0),) * n, confusion=None)
