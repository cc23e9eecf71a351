"""The Dash app: `create_app(settings)` builds the shell, `run(settings)` serves it on :8050.

The shell is a navbar built from Dash's page registry and the page container; each page in
`dashboard/pages/` holds its layout and callbacks, and reads through `pipelines` (the services
opened once per process in `dashboard.data`). Every request passes `dashboard.security` first
(host, origin), and every write callback asks it whether this browser may write.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from pathlib import Path

import dash
from dash import Dash, dcc, html
from flask import Response, abort, send_from_directory

from dashboard import security
from dashboard.data import open_services
from pipelines.ops import logs
from pipelines.settings import Settings, get_settings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# Report files the drift notebook writes (evidently-<stamp>.html, drift-<stamp>.png): nothing
# else under the reports folder is served.
REPORT_NAME = re.compile(r"^(evidently|drift)-[A-Za-z0-9_.\-]+\.(html|png)$")


def create_app(settings: Settings | None = None, *, host: str = "127.0.0.1") -> Dash:
    """The app over the store and registry that `settings` point at (opened once per process),
    answering to `host`, the address it is served on, and to `settings.allowed_hosts`."""
    settings = settings or get_settings()
    open_services(settings)
    app = Dash(
        __name__,
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        title="driftlab",
        suppress_callback_exceptions=True,
        update_title="",  # no "Updating..." in the tab title every refresh
        enable_mcp=False,  # its endpoint runs callbacks: DASH_MCP_ENABLED must not open one
    )
    guard = security.install(app, settings, host)
    links = [
        dcc.Link(page["name"], href=page["relative_path"], className="nav-link", id=f"nav-{name}")
        for name, page in ((p["module"].rsplit(".", 1)[-1], p) for p in _pages())
    ]

    def shell() -> html.Div:
        """Built per page load: the unlock control shows only while this browser is locked."""
        return html.Div(
            [
                html.Nav(
                    [
                        html.Span("driftlab", className="brand"),
                        *links,
                        *security.shell_control(guard),
                    ],
                    className="navbar",
                ),
                html.Main(dash.page_container, className="content"),
            ]
        )

    app.layout = shell

    reports = settings.reports_dir

    @app.server.route("/reports/<name>")
    def report(name: str) -> Response:
        """The drift notebook's reports (Evidently HTML, plots), linked from the Drift page."""
        if not REPORT_NAME.match(name) or not (reports / name).is_file():
            abort(404)
        return send_from_directory(reports, name)

    return app


def _pages() -> list[dict]:
    return sorted(dash.page_registry.values(), key=lambda p: p.get("order") or 0)


def run(
    settings: Settings | None = None, *, host: str = "127.0.0.1", port: int | None = None
) -> None:
    """Serve the dashboard until interrupted (a threaded WSGI server: callbacks run at once).

    It binds to 127.0.0.1 and answers only to its own host names; with `DRIFTLAB_API_KEY`
    set, a browser writes only once unlocked with the key (`dashboard.security`).
    """
    from werkzeug.serving import make_server

    settings = settings or get_settings()
    # Console + logs/dashboard.log, rotated daily; a no-op where `driftlab dashboard` did it
    # (keeping its --verbose).
    logs.configure(logging.getLogger().level == logging.DEBUG, settings, "dashboard")
    app = create_app(settings, host=host)
    port = port or settings.dashboard_port
    server = make_server(host, port, app.server, threaded=True)
    # SIGTERM (what `driftlab up` and service managers send) stops it as cleanly as Ctrl-C:
    # the prediction log flushes what the Predict page logged.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    logger.info("dashboard on http://%s:%d (data %s)", host, port, settings.data_dir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        from dashboard import vision
        from dashboard.data import close_services

        vision.close()  # first: its image log writes through the services' store
        close_services()
