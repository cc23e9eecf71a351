"""Overview: traffic, latency, live and estimated accuracy, champion, drift, queue, last
retrain, health, and the champion's accuracy over time, estimated against realized.

Refreshes every few seconds on its own. Every figure is one aggregation in DuckDB over a
bounded time range (the last hour), so the page costs the same with 10M predictions stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import dash
import httpx
from dash import Input, Output, callback, dcc, html

from dashboard import components as c
from dashboard import figures, performance
from dashboard.data import services
from pipelines.loop import estimated_performance, labeling_queue, retraining_control
from pipelines.loop.monitoring import latest_summary
from pipelines.models.registry import CHAMPION
from pipelines.ops import logs, observe
from pipelines.store import queries as dq

dash.register_page(__name__, path="/", name="Overview", order=0)

REFRESH_MS = 5_000
# The estimates change once per drift check (every `DRIFTLAB_CHECK_INTERVAL`, 60 s by default):
# their chart reads 100 checks, so it refreshes less often than the cards.
PERFORMANCE_REFRESH_MS = 30_000
LOG_LINES = 8


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Overview"),
            monitoring_links(),
            dcc.Interval(id="overview-interval", interval=REFRESH_MS),
            html.Div(id="overview-cards", className="cards"),
            html.Div(id="overview-health", className="panel"),
            html.Div(dcc.Graph(id="overview-throughput"), className="panel"),
            dcc.Interval(id="overview-performance-interval", interval=PERFORMANCE_REFRESH_MS),
            html.Div(dcc.Graph(id="overview-performance"), className="panel"),
            html.Div(id="overview-vision", className="panel"),
            html.Div(
                [html.H3("Latest log lines"), html.Div(id="overview-logs")], className="panel"
            ),
        ]
    )


def monitoring_links() -> html.P:
    """Where the metrics go: the API's /metrics, and the Prometheus and Alertmanager that
    `make observe` (or `make up OBSERVE=1`) runs beside driftlab."""
    s = services().settings
    at = observe.urls(s)
    links = (
        ("Prometheus alerts", f"{at['prometheus']}/alerts"),
        ("Alertmanager", at["alertmanager"]),
        ("/metrics", f"http://{observe.api_address(s)}/metrics"),
    )
    parts: list[Any] = ["Monitoring: "]
    for i, (text, href) in enumerate(links):
        parts += [" · "] if i else []
        parts.append(html.A(text, href=href, target="_blank", id=f"overview-link-{i}"))
    parts += [" (", html.Code("make observe"), " starts Prometheus and Alertmanager)"]
    return html.P(parts, className="message", id="overview-monitoring")


@callback(Output("overview-vision", "children"), Input("overview-interval", "n_intervals"))
def vision_panel(_: int | None) -> list[Any]:
    """The vision model's last hour (API and edge): images, defect rate (share of images with
    a detection), edge FPS, inference time, the confidence histogram and per-class figures.
    Empty when no image was served in the hour."""
    s = services()
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    stats = s.store.vision_stats(s.settings.vision_model_name, since=hour_ago)
    if not stats["images"]:
        return []
    cards = [
        c.card("Images", f"{stats['images']:,}", f"{stats['uncertain']:,} uncertain · last hour"),
        c.card("Defect rate", c.fmt(stats["defect_rate"]), "share of images with a detection"),
        c.card("Edge FPS", c.fmt(stats["edge_fps"]), "mean over edge logs"),
        c.card(
            "Inference ms",
            f"{c.fmt(stats['inference_ms_p50'])} / {c.fmt(stats['inference_ms_p99'])}",
            "p50 / p99 at the edge",
        ),
        c.card(
            "API latency ms",
            f"{c.fmt(stats['latency_ms_p50'])} / {c.fmt(stats['latency_ms_p99'])}",
            "p50 / p99 of /predict/image",
        ),
    ]
    rows = [{"class": cls, **v} for cls, v in stats["per_class"].items()]
    return [
        html.H3(f"Vision: {s.settings.vision_model_name}"),
        html.Div(cards, className="cards"),
        dcc.Graph(
            figure=figures.confidence_histogram(
                stats["confidence_histogram"], "Detection confidence, last hour"
            )
        ),
        c.table(
            rows,
            ["class", "count", "mean_confidence", "uncertain"],
            headers=["class", "detections", "mean confidence", "uncertain"],
        ),
    ]


@callback(
    Output("overview-cards", "children"),
    Output("overview-throughput", "figure"),
    Input("overview-interval", "n_intervals"),
)
def refresh(_: int | None) -> tuple[list[html.Div], Any]:
    """The cards and the last hour's throughput."""
    s = services()
    now = dt.datetime.now(dt.UTC)
    hour_ago = now - dt.timedelta(hours=1)
    serving = s.models.model
    got = s.gather(
        stats=lambda: s.store.prediction_stats(since=hour_ago),
        per_minute=lambda: dq.predictions_per_minute(s.store, now - dt.timedelta(minutes=60)),
        total=lambda: dq.prediction_count(s.store),
        accuracy=lambda: s.store.feedback_accuracy(serving.version if serving else None),
        drift=lambda: latest_summary(s.store),
        estimate=lambda: (
            estimated_performance.latest(s.store, serving.version) if serving else None
        ),
        progress=lambda: labeling_queue.progress(s.store, s.settings, s.registry),
        retrain=lambda: retraining_control.status(s.settings, s.store),
        since=lambda: (
            dq.champion_since(s.store, serving.name, serving.version) if serving else None
        ),
    )
    stats, per_minute, total = got["stats"], got["per_minute"], got["total"]
    accuracy, drift, progress, retrain = (
        got["accuracy"],
        got["drift"],
        got["progress"],
        got["retrain"],
    )
    lat = stats["latency_ms"]
    # The current minute is still filling up: the rate is the last five minutes' average.
    recent = now - dt.timedelta(minutes=5)
    rate = sum(r["n"] for r in per_minute if r["minute"] >= recent) / 5

    if serving is not None:
        since = got["since"]
        champion = c.card(
            "Champion",
            f"v{serving.version}",
            f"{serving.name} · {serving.runtime} · champion {c.ago(since, now)}",
        )
    else:
        champion = c.card("Champion", "none", "train one: make train")
    if drift["run_id"] is not None:
        drift_card = c.card(
            "Drift share",
            f"{drift['drift_share']:.0%}",
            f"{'dataset drift' if drift['dataset_drift'] else 'no dataset drift'} · "
            f"checked {c.ago(drift['ts'], now)} on {drift['n_current']:,} predictions",
        )
    else:
        drift_card = c.card("Drift share", "–", "no drift check yet")
    latest = retrain.get("current") or retrain.get("latest")
    if latest:
        retrain_card = c.card(
            "Last retrain",
            latest.get("status") or "–",
            f"run {latest['event_id'][:8]} ({latest.get('trigger')}) · "
            f"{c.ago(latest.get('started_at'), now)}",
        )
    else:
        retrain_card = c.card("Last retrain", "never", "")
    cards = [
        c.card("Predictions", total, f"{stats['predictions']:,} in the last hour"),
        c.card(
            "Per minute",
            f"{rate:,.0f}",
            f"last 5 min · {stats['uncertain']:,} uncertain in the last hour",
        ),
        c.card(
            "Latency p50 / p95 / p99",
            " / ".join(c.fmt(lat[k], 1) for k in ("p50", "p95", "p99")),
            "ms, last hour",
        ),
        c.card(
            "Live accuracy",
            "–" if accuracy["accuracy"] is None else f"{accuracy['accuracy']:.1%}",
            f"from feedback on {accuracy['n']:,} predictions"
            + (f" of v{serving.version}" if serving else ""),
        ),
        champion,
        performance.card(got["estimate"]),
        drift_card,
        c.card(
            "Labeling queue",
            progress["pending"],
            f"pending · {progress['labeled_today']} labeled today",
        ),
        retrain_card,
    ]
    return cards, figures.throughput(
        per_minute,
        "Predictions per minute, last hour",
        start=now - dt.timedelta(minutes=60),
        end=now,
    )


@callback(
    Output("overview-performance", "figure"),
    Input("overview-performance-interval", "n_intervals"),
)
def performance_chart(_: int | None) -> Any:
    """The last checks' estimated accuracy with its band, the realized accuracy, the champion's
    reference and the drop that counts as harm; each check's drifted features on hover."""
    s = services()
    got = s.gather(
        checks=lambda: estimated_performance.history(s.store, runs=100),
        drift=lambda: s.store.drift_history(limit_runs=100),
    )
    return performance.chart(
        got["checks"],
        performance.drifted_by_run(got["drift"]),
        harm=s.settings.retrain_estimated_drop,
        title="Accuracy: estimated (band) vs realized, last 100 checks",
    )


@callback(
    Output("overview-health", "children"),
    Output("overview-logs", "children"),
    Input("overview-interval", "n_intervals"),
)
def health(_: int | None) -> tuple[list[Any], list[html.Div]]:
    """Health of the api, store, worker and registry, and the latest lines of their logs."""
    s = services()
    badges = [_api_badge(s.settings), _store_badge(s), _worker_badge(s), _registry_badge(s)]
    tails = [
        c.log_tail(f"logs/{name}.log", logs.tail(s.settings, name, LOG_LINES))
        for name in logs.PROCESSES
    ]
    return [html.Span("Health ", className="detail"), *badges], tails


def _api_badge(settings: Any) -> html.Span:
    """The API's own /health, with a short timeout: a hung API must not hang this page."""
    url = f"http://{settings.api_host}:{settings.api_port}/health"
    try:
        body = httpx.get(url, timeout=0.5).json()
        model = body.get("model") or {}
        return c.badge("api", body.get("status", "error"), f"{url} · model v{model.get('version')}")
    except (httpx.HTTPError, ValueError) as exc:
        return c.badge("api", "down", f"{url}: {exc}")


def _store_badge(s: Any) -> html.Span:
    try:
        return c.badge("store", "ok", f"snapshot {s.store.snapshot_id()}")
    except Exception as exc:
        return c.badge("store", "error", str(exc))


def _worker_badge(s: Any) -> html.Span:
    """The worker leaves a trace when it checks; silent for 3 intervals means it is not running."""
    last = dq.latest_check_by(s.store, "worker")
    log = logs.log_path(s.settings, "worker")
    if log.exists():
        mtime = dt.datetime.fromtimestamp(log.stat().st_mtime, dt.UTC)
        last = max(last, mtime) if last else mtime
    if last is None:
        return c.badge("worker", "idle", "no trace of the worker yet")
    late = dt.datetime.now(dt.UTC) - last > dt.timedelta(seconds=3 * s.settings.check_interval)
    return c.badge("worker", "degraded" if late else "ok", f"last seen {c.ago(last)}")


def _registry_badge(s: Any) -> html.Span:
    try:
        version = s.registry.alias_version(CHAMPION)
        status = "ok" if version is not None else "degraded"
        return c.badge("registry", status, f"champion v{version}")
    except Exception as exc:
        return c.badge("registry", "error", str(exc))
