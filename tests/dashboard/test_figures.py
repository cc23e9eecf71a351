"""Unit tests of the pure builders: figures and small components, from literal data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import plotly.graph_objects as go
import pytest

from dashboard import components as c
from dashboard import figures

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def _annotation_text(fig: go.Figure) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


def test_empty_says_why() -> None:
    fig = figures.empty("nothing yet", "Title")
    assert _annotation_text(fig) == "nothing yet"
    assert fig.layout.title.text == "Title"
    assert not fig.data


def test_throughput_stacks_uncertain_apart() -> None:
    rows = [
        {"minute": T0, "n": 10, "uncertain": 3},
        {"minute": T0 + dt.timedelta(minutes=1), "n": 5, "uncertain": 0},
    ]
    fig = figures.throughput(rows)
    confident, uncertain = fig.data
    assert list(confident.y) == [7, 5]
    assert list(uncertain.y) == [3, 0]
    assert fig.layout.barmode == "stack"
    assert list(confident.width) == [60_000, 60_000]  # a minute wide on the date axis
    assert fig.layout.xaxis.range is None
    ranged = figures.throughput(rows, start=T0, end=T0 + dt.timedelta(hours=1))
    assert list(ranged.layout.xaxis.range) == [T0, T0 + dt.timedelta(hours=1)]


def test_throughput_without_rows_is_an_explained_blank() -> None:
    assert "no predictions" in _annotation_text(figures.throughput([]))


def test_drift_heatmap_one_column_per_check_in_time_order() -> None:
    history = [
        {
            "run_id": "b",
            "ts": T0 + dt.timedelta(hours=1),
            "feature": "age",
            "effect_size": 0.4,
            "drifted": True,
        },
        {"run_id": "a", "ts": T0, "feature": "age", "effect_size": 0.05, "drifted": False},
        {"run_id": "a", "ts": T0, "feature": "educ", "effect_size": 0.02, "drifted": False},
        {
            "run_id": "b",
            "ts": T0 + dt.timedelta(hours=1),
            "feature": "educ",
            "effect_size": float("nan"),
            "drifted": False,
        },
    ]
    heat = figures.drift_heatmap(history).data[0]
    assert list(heat.y) == ["age", "educ"]
    assert list(heat.x) == ["11-23 12:00:00", "11-23 13:00:00"]
    assert [list(r) for r in heat.z] == [[0.05, 0.4], [0.02, None]]  # NaN drawn blank
    assert [list(r) for r in heat.text] == [["", "●"], ["", ""]]


def test_drift_heatmap_orders_numbered_features_by_number() -> None:
    history = [
        {"run_id": "a", "ts": T0, "feature": f, "effect_size": 0.1, "drifted": False}
        for f in ("px10", "px9", "px63", "px0", "prediction")
    ]
    heat = figures.drift_heatmap(history).data[0]
    assert list(heat.y) == ["prediction", "px0", "px9", "px10", "px63"]


def test_drift_heatmap_caps_the_colour_not_the_value() -> None:
    history = [
        {"run_id": "a", "ts": T0, "feature": "px0", "effect_size": 2000.0, "drifted": True},
        {"run_id": "a", "ts": T0, "feature": "px1", "effect_size": 0.3, "drifted": True},
    ]
    heat = figures.drift_heatmap(history).data[0]
    assert heat.zmax == figures.HEATMAP_EFFECT_CAP and heat.zmin == 0.0
    assert [list(r) for r in heat.z] == [[2000.0], [0.3]]  # the hover shows the true value


def test_drift_heatmap_without_checks() -> None:
    assert "no drift check yet" in _annotation_text(figures.drift_heatmap([]))


def test_distribution_numeric_draws_shares_at_bin_centres() -> None:
    dist = {
        "kind": "numeric",
        "bins": [0.0, 1.0],
        "width": 1.0,
        "reference": [3, 1],
        "current": [0, 2],
    }
    ref, cur = figures.distribution(dist, "age").data
    assert list(ref.x) == [0.5, 1.5]
    assert list(ref.y) == [0.75, 0.25]
    assert list(cur.y) == [0.0, 1.0]
    assert "n=4" in ref.name and "n=2" in cur.name


def test_distribution_categorical_keeps_labels() -> None:
    dist = {
        "kind": "categorical",
        "bins": ["a", "b"],
        "width": None,
        "reference": [1, 1],
        "current": [0, 0],
    }
    ref, cur = figures.distribution(dist, "job").data
    assert list(ref.x) == ["a", "b"]
    assert list(cur.y) == [0.0, 0.0]  # an empty side is zeros, not a division by zero


def test_distribution_without_bins() -> None:
    fig = figures.distribution({"bins": [], "reference": [], "current": []}, "age")
    assert "no values of age" in _annotation_text(fig)


def test_probabilities_highlight_the_prediction() -> None:
    fig = figures.probabilities([0, 1], [0.3, 0.7], predicted=1)
    bar = fig.data[0]
    assert list(bar.y) == ["0", "1"]
    assert bar.marker.color[1] == figures.CURRENT_COLOR
    assert bar.marker.color[0] != figures.CURRENT_COLOR
    assert list(bar.text) == ["30.0%", "70.0%"]


def test_metrics_comparison_only_higher_is_better_metrics() -> None:
    champion = {"accuracy": 0.8, "macro_f1": 0.7, "recall_0": 0.9, "recall_1": 0.5, "log_loss": 0.4}
    challenger = {"accuracy": 0.82, "macro_f1": 0.75, "recall_0": 0.88}
    fig = figures.metrics_comparison(champion, challenger)
    mine, theirs = fig.data
    assert list(mine.x) == ["accuracy", "macro_f1", "recall 0", "recall 1"]
    assert list(theirs.x) == ["accuracy", "macro_f1", "recall 0"]  # recall_1 missing: left out
    assert list(theirs.y) == [0.82, 0.75, 0.88]


def test_metrics_comparison_without_a_challenger() -> None:
    fig = figures.metrics_comparison({"accuracy": 0.8}, None)
    assert len(fig.data) == 1
    assert "no metrics" in _annotation_text(figures.metrics_comparison(None, None))


def test_image_with_boxes_draws_each_box() -> None:
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    boxes = [
        {
            "x1": 1,
            "y1": 2,
            "x2": 10,
            "y2": 12,
            "class": "cat",
            "confidence": 0.9,
            "uncertain": False,
        },
        {
            "x1": 5,
            "y1": 5,
            "x2": 30,
            "y2": 18,
            "class": "dog",
            "confidence": 0.5,
            "uncertain": True,
        },
    ]
    fig = figures.image_with_boxes(image, boxes)
    assert len(fig.layout.shapes) == 2
    assert fig.layout.images[0].source.startswith("data:image/png;base64,")
    assert (fig.layout.images[0].sizex, fig.layout.images[0].sizey) == (40, 20)
    assert fig.layout.shapes[1].line.color == figures.CHALLENGER_COLOR
    assert [a.text for a in fig.layout.annotations] == ["cat 0.90", "dog 0.50"]


# -- components --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "–"),
        (True, "yes"),
        (1234, "1,234"),
        (0.12345, "0.123"),
        (1e-9, "1e-09"),
        (T0, "2026-11-23 12:00:00 UTC"),
        ("x", "x"),
    ],
)
def test_fmt(value: object, shown: str) -> None:
    assert c.fmt(value) == shown


def test_ago() -> None:
    assert c.ago(T0 - dt.timedelta(seconds=30), T0) == "30 s ago"
    assert c.ago(T0 - dt.timedelta(hours=3), T0) == "3 h ago"
    assert c.ago(None) == "–"


def test_outside_range() -> None:
    numeric = {"kind": "numeric", "min": 1.0, "max": 5.0}
    assert c.outside_range(6, numeric) and not c.outside_range(5, numeric)
    categorical = {"kind": "categorical", "shares": {"a": 0.5, "b": 0.5}}
    assert c.outside_range("z", categorical) and not c.outside_range("a", categorical)
    assert not c.outside_range(1, None)


def test_condition_rows_mark_crossed_thresholds() -> None:
    check = {
        "figures": {
            "drift_share": 0.5,
            "dataset_drift": True,
            "new_labels": 10,
            "errors_per_class": {"0": 12, "1": 2},
            "live_accuracy": 0.55,
            "n_feedback": 40,
            "now": 1000.0,
            "last_retrain_at": 900.0,
            "running": False,
        },
        "thresholds": {
            "drift_share_threshold": 0.3,
            "min_new_labels": 50,
            "fail_threshold": 10,
            "accuracy_floor": 0.6,
            "min_feedback": 30,
            "cooldown_s": 600.0,
        },
    }
    crossed = {r["condition"].split(" (")[0]: r["crossed"] for r in c.condition_rows(check)}
    assert crossed == {
        "drift share": True,
        "new labels since the champion's training data": False,
        "errors on class 0": True,
        "errors on class 1": False,
        "live accuracy": True,
        "seconds since the last retrain": True,  # 100 s < 600 s cooldown: blocks
        "a retrain is running": False,
    }


def test_run_rows_show_both_sides_of_the_gate() -> None:
    runs = [
        {
            "event_id": "e1",
            "started_at": T0,
            "trigger": "dashboard",
            "who": "ann",
            "reasons": ["drift"],
            "status": "promoted",
            "champion_version": "1",
            "candidate_version": "2",
            "metrics": {
                "champion": {"fixed": {"macro_f1": 0.6}},
                "challenger": {"fixed": {"macro_f1": 0.7}},
                "seconds": 12.5,
            },
            "decision": {"promote": True, "reasons": ["macro_f1 +0.1"]},
        }
    ]
    row = c.run_rows(runs)[0]
    assert row["champion macro_f1"] == 0.6 and row["candidate macro_f1"] == 0.7
    assert row["reasons"] == "drift" and row["decision"] == "macro_f1 +0.1"
    assert row["seconds"] == 12.5


def test_box_editor_draws_editable_boxes_in_draw_mode() -> None:
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    boxes = [{"box": [1, 2, 20, 30], "class": 1}, {"box": [30, 5, 50, 25], "class": 9}]
    fig = figures.box_editor(image, boxes, ["a", "b"], title="item")
    assert fig.layout.dragmode == "drawrect"
    assert [s.editable for s in fig.layout.shapes] == [True, True]
    assert [a.text for a in fig.layout.annotations] == ["#1 b", "#2 9"]  # unknown: its index
    assert list(fig.layout.yaxis.range) == [40, 0]  # pixels, y down


def test_box_edits_reads_drawn_and_moved_boxes() -> None:
    boxes = [{"box": [1.0, 2.0, 20.0, 30.0], "class": 1}]
    drawn = {
        "shapes": [
            {"type": "rect", "x0": 1, "y0": 2, "x1": 20, "y1": 30},
            {"type": "rect", "x0": 55.04, "y0": 30, "x1": 70, "y1": -3},  # reversed, outside
        ]
    }
    assert figures.box_edits(drawn, boxes, 4, 60, 40) == [
        {"box": [1.0, 2.0, 20.0, 30.0], "class": 1},
        {"box": [55.0, 0.0, 60.0, 30.0], "class": 4},
    ]
    moved = {"shapes[0].x0": 3.3, "shapes[0].x1": 25}
    assert figures.box_edits(moved, boxes, 0, 60, 40) == [
        {"box": [3.3, 2.0, 25.0, 30.0], "class": 1}
    ]
    click = {
        "shapes": [*drawn["shapes"][:1], {"type": "rect", "x0": 5, "y0": 5, "x1": 5.2, "y1": 9}]
    }
    assert figures.box_edits(click, boxes, 0, 60, 40) == boxes  # no area: not a box
    assert figures.box_edits({"xaxis.range[0]": 3}, boxes, 0, 60, 40) is None  # a zoom
    assert figures.box_edits(None, boxes, 0, 60, 40) is None


def test_confidence_histogram_keeps_empty_bins_and_says_when_there_is_nothing() -> None:
    counts = [0, 0, 0, 0, 5, 3, 0, 0, 1, 9]
    hist = {"edges": [round(i / 10, 1) for i in range(11)], "counts": counts}
    fig = figures.confidence_histogram(hist, "t")
    bar = fig.data[0]
    assert list(bar.y) == hist["counts"]
    assert bar.x[0] == "0.0–0.1" and bar.x[-1] == "0.9–1.0"
    empty = figures.confidence_histogram({"edges": hist["edges"], "counts": [0] * 10}, "t")
    assert not empty.data and "no detections" in empty.layout.annotations[0].text


def test_digit_is_ink_on_paper_square_and_without_axes() -> None:
    pixels = np.zeros((8, 8))
    pixels[0, 3] = 16.0
    fig = figures.digit(pixels, "the input")
    heat = fig.data[0]
    assert heat.z[0][3] == 16.0 and heat.z[7][0] == 0.0
    assert (heat.zmin, heat.zmax) == (0.0, 16.0)
    assert heat.colorscale[0][1] == "#ffffff" and heat.colorscale[-1][1] == "#000000"
    assert heat.showscale is False and heat.xgap == 0
    assert list(fig.layout.yaxis.range) == [7.5, -0.5]  # the top row on top
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.width == fig.layout.height
    assert not fig.layout.xaxis.visible and not fig.layout.yaxis.visible
    canvas = figures.digit(pixels.tolist(), canvas=True, size=300).data[0]
    assert canvas.xgap == 1 and canvas.ygap == 1


def test_painted_inks_the_clicked_cell_and_a_second_click_erases() -> None:
    blank = [[0.0] * 8 for _ in range(8)]
    click = {"points": [{"x": 2, "y": 5, "z": 0.0}]}
    once = figures.painted(blank, click, 16.0)
    assert once is not None and once[5][2] == 16.0 and sum(map(sum, once)) == 16.0
    assert blank[5][2] == 0.0  # a new canvas, the old one untouched
    assert figures.painted(once, click, 8.0)[5][2] == 8.0  # type: ignore[index]
    assert figures.painted(once, click, 16.0) == blank
    assert figures.painted(blank, None, 16.0) is None
    assert figures.painted(blank, {"points": []}, 16.0) is None
    assert figures.painted(blank, {"points": [{"x": 9, "y": 0}]}, 16.0) is None


@pytest.mark.parametrize(
    ("classes", "keys"),
    [
        (list(range(10)), [str(d) for d in range(10)]),  # digits: the digit itself
        ([0, 1], ["0", "1"]),
        (["cat", "dog"], ["1", "2"]),  # else their place, 1–9
        ([f"c{i}" for i in range(11)], [*(str(i) for i in range(1, 10)), None, None]),
        (["10", "11"], ["1", "2"]),
    ],
)
def test_every_class_has_a_shortcut_while_keys_last(classes: list, keys: list) -> None:
    assert c.shortcut_keys(classes) == keys


def test_class_buttons_show_and_carry_their_key() -> None:
    buttons = c.class_buttons([3, 7], "kind", "labeling-class")
    assert [b.id for b in buttons] == [
        {"type": "kind", "value": "3"},
        {"type": "kind", "value": "7"},
    ]
    first = buttons[0].to_plotly_json()["props"]
    assert first["data-key"] == "3" and first["className"] == "primary labeling-class"
    assert buttons[0].children[1].children == "3"  # the <kbd>
