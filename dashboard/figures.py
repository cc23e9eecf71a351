"""Pure figure builders: plain data in, a plotly figure out. No store, no Dash, no I/O.

The pages' callbacks read through `pipelines` and hand the rows to these, so every chart can be
unit-tested from a literal list of dicts, and the same look holds across pages.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from pipelines.demo.datasets import DIGIT_INK

REFERENCE_COLOR = "#7f8c8d"
CURRENT_COLOR = "#2c7fb8"
CHAMPION_COLOR = "#2c7fb8"
CHALLENGER_COLOR = "#f39c12"
GOOD_COLOR = "#27ae60"
BAD_COLOR = "#c0392b"
_MARGIN = {"l": 50, "r": 20, "t": 40, "b": 40}


def styled(fig: go.Figure, title: str, **extra: Any) -> go.Figure:
    """The house look of a figure: its title, margins, template and height (300 px unless
    `height` is given)."""
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 14}},
        margin=_MARGIN,
        template="plotly_white",
        height=extra.pop("height", 300),
        **extra,
    )
    return fig


def empty(message: str, title: str = "") -> go.Figure:
    """A blank chart that says why there is nothing to draw (no data yet, no check yet)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return styled(fig, title)


def throughput(
    rows: Sequence[Mapping[str, Any]],
    title: str = "Predictions per minute",
    *,
    start: Any = None,
    end: Any = None,
) -> go.Figure:
    """Predictions per minute, the uncertain ones stacked apart (rows: minute, n, uncertain).

    `start` and `end` fix the time axis (the last hour, say), so that a quiet hour with one
    busy minute shows as that, not as one bar stretched over the whole chart.
    """
    if not rows:
        return empty("no predictions in this period", title)
    minutes = [r["minute"] for r in rows]
    uncertain = [int(r.get("uncertain") or 0) for r in rows]
    certain = [int(r["n"]) - u for r, u in zip(rows, uncertain, strict=True)]
    width = [60_000] * len(rows)  # one minute, in the milliseconds of a date axis
    fig = go.Figure(
        [
            go.Bar(
                x=minutes,
                y=certain,
                name="confident",
                marker_color=CURRENT_COLOR,
                width=width,
                offset=0,
            ),
            go.Bar(
                x=minutes,
                y=uncertain,
                name="uncertain",
                marker_color=CHALLENGER_COLOR,
                width=width,
                offset=0,
            ),
        ]
    )
    fig.update_xaxes(type="date")
    if start is not None and end is not None:
        fig.update_xaxes(range=[start, end])
    return styled(fig, title, barmode="stack", bargap=0.05, legend={"orientation": "h"})


HEATMAP_EFFECT_CAP = 1.0
"""Effect sizes at or above this share the darkest colour (1.0: the mass moved a whole std)."""


def _natural(name: str) -> tuple:
    """A sort key that puts px2 before px10 (numbers inside a name compare as numbers)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def drift_heatmap(
    history: Sequence[Mapping[str, Any]], title: str = "Drift per feature"
) -> go.Figure:
    """Effect size per feature (rows) and check (columns); drifted cells marked with ●.

    `history` rows carry run_id, ts, feature, effect_size and drifted (`Store.drift_history`).
    Columns are checks in time order; a feature a check did not test is left blank.
    """
    if not history:
        return empty("no drift check yet: run `make drift` or wait for the worker", title)
    runs: dict[str, Any] = {}
    for r in history:
        runs[r["run_id"]] = min(runs.get(r["run_id"], r["ts"]), r["ts"])
    order = sorted(runs, key=lambda run: runs[run])
    features = sorted({r["feature"] for r in history}, key=_natural)
    col = {run: i for i, run in enumerate(order)}
    row = {f: i for i, f in enumerate(features)}
    z: list[list[float | None]] = [[None] * len(order) for _ in features]
    text = [[""] * len(order) for _ in features]
    for r in history:
        i, j = row[r["feature"]], col[r["run_id"]]
        effect = r.get("effect_size")
        z[i][j] = None if effect is None or not math.isfinite(effect) else float(effect)
        text[i][j] = "●" if r.get("drifted") else ""
    # One column per check, labelled by its time: checks are minutes or hours apart, and a
    # time axis would draw them as slivers of uneven width.
    labels = [_when(runs[run]) for run in order]
    fig = go.Figure(
        go.Heatmap(
            x=labels,
            y=features,
            z=z,
            text=text,
            texttemplate="%{text}",
            colorscale="YlOrRd",
            zmin=0.0,
            # Capped: a feature that was constant in training (a blank pixel) has an effect in
            # the thousands once it varies, which would wash every other cell out. The hover
            # shows the true value.
            zmax=HEATMAP_EFFECT_CAP,
            colorbar={
                "title": "effect",
                "tickvals": [0, HEATMAP_EFFECT_CAP / 2, HEATMAP_EFFECT_CAP],
                "ticktext": ["0", f"{HEATMAP_EFFECT_CAP / 2:g}", f"≥ {HEATMAP_EFFECT_CAP:g}"],
            },
            hovertemplate="%{y}<br>%{x}<br>effect size %{z:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category")
    return styled(fig, title, height=max(260, 28 * len(features) + 120))


def _when(ts: Any) -> str:
    """A check's time as a short, unique-enough axis label."""
    return ts.strftime("%m-%d %H:%M:%S") if hasattr(ts, "strftime") else str(ts)


def distribution(dist: Mapping[str, Any], feature: str, title: str | None = None) -> go.Figure:
    """Reference vs current share per bin (from `store.queries.distribution`).

    Shares rather than counts: the training set and the window differ in size by orders of
    magnitude, and what matters is the shape.
    """
    title = title or f"{feature}: reference vs current"
    bins = list(dist.get("bins") or [])
    if not bins:
        return empty(f"no values of {feature} to compare", title)
    ref, cur = list(dist["reference"]), list(dist["current"])
    ref_total, cur_total = sum(ref) or 1, sum(cur) or 1
    width = dist.get("width")
    x = bins if width is None else [b + width / 2 for b in bins]
    fig = go.Figure(
        [
            go.Bar(
                x=x,
                y=[v / ref_total for v in ref],
                name=f"reference (n={sum(ref):,})",
                marker_color=REFERENCE_COLOR,
                opacity=0.6,
                width=width,
            ),
            go.Bar(
                x=x,
                y=[v / cur_total for v in cur],
                name=f"current (n={sum(cur):,})",
                marker_color=CURRENT_COLOR,
                opacity=0.6,
                width=width,
            ),
        ]
    )
    fig.update_yaxes(tickformat=".0%", title="share")
    return styled(fig, title, barmode="overlay", legend={"orientation": "h"})


def probabilities(
    classes: Sequence[Any], probs: Sequence[float], predicted: Any = None, title: str = ""
) -> go.Figure:
    """Probability per class as horizontal bars, the predicted class highlighted."""
    if not classes:
        return empty("no probabilities", title or "Probabilities")
    labels = [str(c) for c in classes]
    colors = [CURRENT_COLOR if str(c) == str(predicted) else REFERENCE_COLOR for c in classes]
    fig = go.Figure(
        go.Bar(
            x=list(probs),
            y=labels,
            orientation="h",
            marker_color=colors,
            text=[f"{p:.1%}" for p in probs],
            textposition="auto",
        )
    )
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(type="category", autorange="reversed")
    return styled(fig, title or "Probabilities", height=max(160, 40 * len(labels) + 80))


def metrics_comparison(
    champion: Mapping[str, float] | None,
    challenger: Mapping[str, float] | None,
    *,
    champion_label: str = "champion",
    challenger_label: str = "challenger",
    title: str = "Held-out metrics",
) -> go.Figure:
    """Accuracy, macro-F1 and per-class recall of two versions side by side (higher is better).

    Only metrics in [0, 1] where higher is better are drawn, so the bars read on one axis; a
    metric one side lacks is left out for that side.
    """
    names = ["accuracy", "macro_f1"]
    recalls = sorted(
        {k for side in (champion or {}, challenger or {}) for k in side if k.startswith("recall_")}
    )
    names += recalls
    sides = [
        (champion, champion_label, CHAMPION_COLOR),
        (challenger, challenger_label, CHALLENGER_COLOR),
    ]
    bars = []
    for metrics, label, color in sides:
        if not metrics:
            continue
        shown = [n for n in names if isinstance(metrics.get(n), int | float)]
        bars.append(
            go.Bar(
                x=[n.replace("recall_", "recall ") for n in shown],
                y=[float(metrics[n]) for n in shown],
                name=label,
                marker_color=color,
                text=[f"{float(metrics[n]):.3f}" for n in shown],
                textposition="outside",
            )
        )
    if not bars:
        return empty("no metrics recorded", title)
    fig = go.Figure(bars)
    fig.update_yaxes(range=[0, 1.1])
    return styled(fig, title, barmode="group", legend={"orientation": "h"})


def confidence_histogram(hist: Mapping[str, Sequence[float]], title: str) -> go.Figure:
    """Detections per confidence bin (`edges` has one more value than `counts`, as
    `Store.vision_stats` gives them); empty bins stay visible as zero-height bars."""
    counts = list(hist.get("counts", []))
    edges = list(hist.get("edges", []))
    if not counts or sum(counts) == 0 or len(edges) != len(counts) + 1:
        return empty("no detections in this period", title)
    labels = [f"{lo:.1f}–{hi:.1f}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    fig = go.Figure(go.Bar(x=labels, y=counts, marker_color=CURRENT_COLOR))
    return styled(fig, title, xaxis_title="confidence", yaxis_title="detections")


def image_with_boxes(image: Any, boxes: Sequence[Mapping[str, Any]], title: str = "") -> go.Figure:
    """An image (array H×W[×C], PIL image or PNG bytes) with its detection boxes drawn.

    `boxes` rows carry x1, y1, x2, y2 in pixels, `class` and `confidence`.
    """
    fig, width, height = _image_figure(image)
    for box in boxes:
        color = CHALLENGER_COLOR if box.get("uncertain") else GOOD_COLOR
        fig.add_shape(
            type="rect",
            x0=box["x1"],
            y0=box["y1"],
            x1=box["x2"],
            y1=box["y2"],
            line={"color": color, "width": 2},
        )
        _box_label(
            fig,
            box["x1"],
            box["y1"],
            f"{box.get('class')} {float(box.get('confidence') or 0):.2f}",
            color,
        )
    fig.update_xaxes(range=[0, width], visible=False)
    fig.update_yaxes(range=[height, 0], visible=False, scaleanchor="x")
    return styled(fig, title, height=min(600, max(240, height + 60)))


def _box_label(fig: go.Figure, x: float, y: float, text: str, color: str) -> None:
    """A box's caption on its top-left corner, in the box's colour."""
    fig.add_annotation(
        x=x,
        y=y,
        text=text,
        showarrow=False,
        xanchor="left",
        yanchor="bottom",
        bgcolor=color,
        font={"color": "white", "size": 11},
    )


def _image_figure(image: Any) -> tuple[go.Figure, int, int]:
    """A figure whose data coordinates are the image's pixels (y down), the image behind."""
    from PIL import Image

    pil: Image.Image
    if isinstance(image, bytes | bytearray):
        pil = Image.open(io.BytesIO(image))
    elif isinstance(image, Image.Image):
        pil = image
    else:
        pil = Image.fromarray(image)
    buf = io.BytesIO()
    pil.convert("RGB").save(buf, format="PNG")
    width, height = pil.size
    source = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    fig = go.Figure()
    fig.add_layout_image(
        source=source,
        x=0,
        y=0,
        sizex=width,
        sizey=height,
        xref="x",
        yref="y",
        layer="below",
        sizing="stretch",
    )
    return fig, width, height


def box_editor(
    image: Any, boxes: Sequence[Mapping[str, Any]], names: Sequence[str], title: str = ""
) -> go.Figure:
    """An image with the boxes a person is reviewing, ready to edit in the browser.

    `boxes` rows carry `box` ([x1, y1, x2, y2] in pixels) and `class` (an index into `names`).
    Each box is an editable shape in the same order (a drag moves or resizes it), numbered
    like the rows under the figure; the drag mode draws rectangles, so a missing object is
    one drag away. The page reads the edits back from the graph's `relayoutData`
    (`box_edits`). The figure is tall enough that small images get big enough to draw on.
    """
    fig, width, height = _image_figure(image)
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box["box"])
        cls = int(box["class"])
        name = names[cls] if 0 <= cls < len(names) else str(cls)
        fig.add_shape(
            type="rect",
            x0=x1,
            y0=y1,
            x1=x2,
            y1=y2,
            editable=True,
            line={"color": CHALLENGER_COLOR, "width": 2},
        )
        _box_label(fig, x1, y1, f"#{i + 1} {name}", CHALLENGER_COLOR)
    fig.update_xaxes(range=[0, width], visible=False)
    fig.update_yaxes(range=[height, 0], visible=False, scaleanchor="x")
    return styled(
        fig,
        title,
        height=420,
        dragmode="drawrect",
        newshape={"line": {"color": GOOD_COLOR, "width": 2}},
        uirevision=title,  # keep zoom while the boxes change; reset for the next image
    )


def box_edits(
    relayout: Mapping[str, Any] | None,
    boxes: Sequence[Mapping[str, Any]],
    new_class: int,
    width: float,
    height: float,
) -> list[dict[str, Any]] | None:
    """The reviewed boxes after one browser edit of a `box_editor` figure, or None when the
    event changed no box (a zoom, a pan, the initial draw).

    Plotly reports a drawn rectangle as the whole `shapes` list (the boxes in order, then the
    new one) and a moved or resized box as `shapes[i].x0`-style keys. A new box gets
    `new_class`; every box is ordered (x1 < x2, y1 < y2), clipped to the image and rounded to
    0.1 px, and a box with no area is dropped (a click, not a drag).
    """
    if not relayout:
        return None
    out = [dict(b, box=list(b["box"])) for b in boxes]
    changed = False
    if isinstance(relayout.get("shapes"), list):
        for shape in relayout["shapes"][len(boxes) :]:
            if isinstance(shape, Mapping) and shape.get("type", "rect") == "rect":
                box = [shape.get("x0"), shape.get("y0"), shape.get("x1"), shape.get("y1")]
                out.append({"box": box, "class": new_class})
                changed = True
    for key, value in relayout.items():
        if not key.startswith("shapes[") or "]." not in key:
            continue
        index, _, coord = key[len("shapes[") :].partition("].")
        if index.isdigit() and int(index) < len(out) and coord in ("x0", "y0", "x1", "y1"):
            out[int(index)]["box"][("x0", "y0", "x1", "y1").index(coord)] = value
            changed = True
    if not changed:
        return None
    clean = []
    for b in out:
        try:
            x0, y0, x1, y1 = (float(v) for v in b["box"])
        except (TypeError, ValueError):
            continue
        xa, xb = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
        ya, yb = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
        if xb - xa >= 1 and yb - ya >= 1:
            clean.append({**b, "box": [round(v, 1) for v in (xa, ya, xb, yb)]})
    return clean


# -- 8×8 digits (the digits demo): a row of 64 pixel features drawn as the image it is ------------

INK_ON_PAPER = [[0.0, "#ffffff"], [1.0, "#000000"]]  # reversed greys: 0 white, full ink black


def digit(pixels: Any, title: str = "", *, canvas: bool = False, size: int = 220) -> go.Figure:
    """An 8×8 digit (rows of pixel values 0–16, top row first) as ink on paper: square, no
    axes, no colour bar.

    `canvas` draws it to be painted on: a thin grid between the cells and each cell's row,
    column and value on hover; a click on a cell reaches the page as `clickData` (`painted`).
    """
    z = [[float(v) for v in row] for row in pixels]
    side = len(z)
    gap = 1 if canvas else 0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(side)),
            y=list(range(side)),
            zmin=0.0,
            zmax=DIGIT_INK,
            colorscale=INK_ON_PAPER,
            showscale=False,
            xgap=gap,
            ygap=gap,
            hovertemplate="row %{y}, column %{x}: %{z:.1f}<extra></extra>",
        )
    )
    axis = {"visible": False, "fixedrange": True, "constrain": "domain"}  # clicks, no zoom
    fig.update_xaxes(range=[-0.5, side - 0.5], **axis)
    fig.update_yaxes(range=[side - 0.5, -0.5], scaleanchor="x", **axis)
    styled(
        fig,
        title,
        height=size,
        width=size,
        plot_bgcolor="#d5dbe1" if canvas else "#ffffff",  # the grid lines between cells
        uirevision="digit",  # a repaint keeps the view (no zoom reset per click)
    )
    fig.update_layout(margin={"l": 4, "r": 4, "t": 28 if title else 4, "b": 4})
    return fig


def painted(
    pixels: Sequence[Sequence[float]], click: Mapping[str, Any] | None, ink: float
) -> list[list[float]] | None:
    """The canvas after a click on a `digit(..., canvas=True)` figure: the clicked cell set to
    `ink`, or back to blank paper when it already holds that ink (a second click erases).
    None when the click names no cell of the canvas."""
    points = (click or {}).get("points") or []
    if not points:
        return None
    try:
        row, col = int(points[0]["y"]), int(points[0]["x"])
    except (KeyError, TypeError, ValueError):
        return None
    out = [[float(v) for v in r] for r in pixels]
    if not (0 <= row < len(out) and 0 <= col < len(out[row])):
        return None
    out[row][col] = 0.0 if out[row][col] == ink else float(ink)
    return out
