"""Label Studio pre-annotations: `yogo infer --label-studio tasks.json` writes one task per frame
with the model's boxes as a prediction, so a labeller corrects boxes instead of drawing them.

    tasks = [frame_task(name, url, (h, w), rows, class_names, "yogo 1.2 best.pth")]
    boxes = read_predictions(Path("tasks.json"))   # {frame name: [(class, x0, y0, x1, y1, score)]}

The JSON is what Label Studio imports (Import, or the API): rectangles in percent of the image,
`rectanglelabels` with the class names, a score per box and per task, and the model version.
It pairs with a labelling config whose `RectangleLabels` is named "label" and whose `Image` is
named "image" (docs/labelling-loop.md has it). Coming back, Label Studio's "YOLO" export
(labels/, images/, notes.json) trains as it is: notes.json maps its ids to class names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from yogo.errors import UserError

# Label Studio serves files under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT at this URL.
LOCAL_FILES = "/data/local-files/?d="
FROM_NAME, TO_NAME = "label", "image"


def url_prefix(image_root: Path, prefix: str | None) -> str:
    """What goes before an image's relative path: `prefix` as given, or Label Studio's
    local-files URL of `image_root` (for a document root of `/`)."""
    if prefix is not None:
        return prefix.rstrip("/") + "/"
    return LOCAL_FILES + quote(str(image_root.resolve()).lstrip("/")) + "/"


def frame_task(
    name: str,
    url: str,
    height_width: tuple[int, int],
    rows: np.ndarray,
    class_names: Sequence[str],
    model_version: str,
) -> dict[str, Any]:
    """One task: the frame's image URL and its detections, `rows` (N, 7) as yogo.model.boxes.
    postprocess gives them (x0, y0, x1, y1 normalised, objectness, class probability, class)."""
    height, width = height_width
    results = []
    for k, (x0, y0, x1, y1, objectness, class_prob, cls) in enumerate(rows.tolist()):
        results.append(
            {
                "id": f"{name}#{k}",
                "type": "rectanglelabels",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {
                    "x": 100 * x0,
                    "y": 100 * y0,
                    "width": 100 * (x1 - x0),
                    "height": 100 * (y1 - y0),
                    "rotation": 0,
                    "rectanglelabels": [class_names[int(cls)]],
                },
                "score": objectness * class_prob,
            }
        )
    # The task's score: its least sure box, so sorting by it puts the frames to check first.
    score = min((r["score"] for r in results), default=1.0)
    return {
        "data": {TO_NAME: url, "frame": name},
        "predictions": [{"model_version": model_version, "score": score, "result": results}],
    }


def read_predictions(path: Path) -> dict[str, list[tuple[str, float, float, float, float, float]]]:
    """The boxes of a tasks file `frame_task` wrote, per frame name: class name, x0, y0, x1,
    y1 (normalised) and score."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
        out = {}
        for task in tasks:
            boxes = []
            for result in task["predictions"][0]["result"]:
                value = result["value"]
                x0, y0 = value["x"] / 100, value["y"] / 100
                x1, y1 = x0 + value["width"] / 100, y0 + value["height"] / 100
                boxes.append((value["rectanglelabels"][0], x0, y0, x1, y1, result["score"]))
            out[task["data"]["frame"]] = boxes
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise UserError(
            f"not a yogo Label Studio tasks file ({type(e).__name__}: {e})", path=path
        ) from None
    return out
