"""`driftlab`: one command line for every job. `driftlab <command> --help` explains each.

One parser and one short function per command, each reading its arguments and calling the
library: longer than most modules, and kept whole so that every command is found in one place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any

from pipelines import __version__
from pipelines.ops import logs, observe, supervisor
from pipelines.settings import Settings, get_settings

logger = logging.getLogger("driftlab")


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# -- commands --------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.store import Store
    from pipelines.store.postgres import redact

    store = Store.open(settings)
    _print({"catalog": redact(settings.catalog_uri), "snapshot_id": store.snapshot_id()})
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """Run notebooks/train.ipynb through papermill with the given parameters; with `--vision`,
    bootstrap the first vision model (demo digits seeded, trained, registered, promoted)."""
    if args.vision:
        return _train_vision(args, settings)
    from pipelines.ops.notebooks import run_notebook

    params: dict[str, Any] = {
        "estimator": args.estimator,
        "test_size": args.test_size,
        "random_state": args.random_state,
        "promote": not args.no_promote,
        "seed_demo": not args.no_demo,
        "snapshot_id": args.snapshot_id,
    }
    if args.n_estimators is not None:
        params["n_estimators"] = args.n_estimators
    if args.max_depth is not None:
        params["max_depth"] = args.max_depth
    out = run_notebook("train", settings, params)
    result = json.loads(out.with_suffix(".json").read_text())
    _print({**result, "notebook": str(out)})
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.framing import JSONErrorsProtocol

    host = args.host or settings.api_host
    port = args.port or settings.api_port
    check_bind(host, settings)
    os.environ.update(settings.process_env())
    os.environ["DRIFTLAB_API_HOST"] = host  # the app answers to the address it is bound to
    get_settings.cache_clear()
    os.environ[logs.ENV] = "api"  # uvicorn's worker processes log to the same file
    if settings.api_workers > 1:
        from api.metrics import prepare_multiprocess

        os.environ.update(supervisor.children_env())  # they die with this process
        prepare_multiprocess(settings, port)  # /metrics adds up every process's series
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=JSONErrorsProtocol,  # httptools, with JSON for requests it can't parse
        workers=settings.api_workers,  # > 1 needs the import string + factory above
    )
    return 0


def check_bind(host: str, settings: Settings) -> None:
    """An API reachable from other machines must be protected by a key."""
    if host not in {"127.0.0.1", "localhost", "::1"} and not settings.api_key:
        raise SystemExit(
            f"refusing to listen on {host} without DRIFTLAB_API_KEY: anyone on the network "
            "could write to the store. Set DRIFTLAB_API_KEY or bind to 127.0.0.1."
        )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import threading

    from pipelines.loop.worker import Worker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker = Worker.open(settings)
    if args.once:
        if settings.shared_catalog:  # one round, only if no other worker is active
            worker.lease = Worker.keeper(settings).start()
        try:
            _print(worker.tick())
        finally:
            if worker.lease is not None:
                worker.lease.stop()
        return 0
    worker.run(stop)
    return 0


def cmd_drift(args: argparse.Namespace, settings: Settings) -> int:
    """Run notebooks/drift_report.ipynb: our check into the store + an Evidently HTML report;
    with --vision, notebooks/drift_report_vision.ipynb: the image check, plots and frames."""
    from pipelines.ops.notebooks import run_notebook

    if args.vision:
        out = run_notebook("drift_report_vision", settings, {"window_size": args.window_size})
    else:
        params = {"window_size": args.window_size, "evidently": not args.no_evidently}
        out = run_notebook("drift_report", settings, params)
    _print({**json.loads(out.with_suffix(".json").read_text()), "notebook": str(out)})
    return 0


def _train_vision(args: argparse.Namespace, settings: Settings) -> int:
    """`driftlab train --vision`: the vision loop's first champion (`retrain.bootstrap`)."""
    try:
        from pipelines.vision import retrain
    except ImportError as exc:
        raise SystemExit(
            f"vision is not installed ({exc}): pip install -e '.[vision]' (make setup does)"
        ) from None
    from pipelines.store import Store

    store = Store.open(settings)
    try:
        out = retrain.bootstrap(
            settings,
            store,
            task=args.task,
            epochs=args.epochs,
            imgsz=args.imgsz,
            promote=not args.no_promote,
        )
    finally:
        store.close()
    _print(out)
    return 0


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    """Run notebooks/retrain.ipynb: challenger, gate, promotion (one run at a time); with
    `--vision`, the vision model's retrain (`python -m pipelines.vision.retrain`)."""
    from pipelines.loop import retraining_control
    from pipelines.ops.notebooks import run_notebook
    from pipelines.store import Store

    if args.vision:
        return _retrain_vision(args)
    vision_only = [f"--{k}" for k in ("epochs", "imgsz") if getattr(args, k) is not None]
    if vision_only:
        raise SystemExit(f"{', '.join(vision_only)} only apply to a vision retrain (--vision)")

    params: dict[str, Any] = {
        "trigger": args.trigger,
        "who": args.who,
        "reasons_json": args.reasons,
        "event_id": args.event_id or "",
        "estimator": args.estimator or "",
        "promote": not args.no_promote,
    }
    if args.optuna_trials is not None:
        params["optuna_trials"] = args.optuna_trials
    if args.optuna_timeout is not None:
        params["optuna_timeout"] = args.optuna_timeout
    # The lock is held here, around the kernel: a lock the kernel took would leave a gap
    # between the trigger's check and the run. `--lock-fd`/`--lock-lease`: one `trigger` took.
    try:
        held = retraining_control.adopt(
            settings, fd=args.lock_fd, lease=args.lock_lease
        ) or retraining_control.acquire(settings)
    except retraining_control.RetrainBusy as exc:
        logger.error("%s", exc)
        return 3
    params["hold_lock"] = False
    try:
        out = run_notebook("retrain", settings, params)
    except Exception as exc:
        # A kernel that died before the run recorded anything would leave its event queued.
        if args.event_id:
            store = Store.open(settings)
            runs = store.retraining_runs(limit=1, event_id=args.event_id)
            if runs and runs[0]["status"] in {"queued", "running"}:
                store.add_retraining_event(
                    {
                        "event_id": args.event_id,
                        "trigger": args.trigger,
                        "who": args.who,
                        "status": "failed",
                        "error": f"{type(exc).__name__}: {exc}"[:2000],
                    }
                )
        raise
    finally:
        held.release()
    _print({**json.loads(out.with_suffix(".json").read_text()), "notebook": str(out)})
    return 0


def _retrain_vision(args: argparse.Namespace) -> int:
    """The vision retrain in this process, with the same arguments `retraining_control.trigger`
    passes its child (`--lock-fd` included), so both ways in run one code path."""
    tabular_only = [
        flag
        for flag, value in (
            ("--estimator", args.estimator),
            ("--optuna-trials", args.optuna_trials),
            ("--optuna-timeout", args.optuna_timeout),
        )
        if value is not None
    ]
    if tabular_only:
        raise SystemExit(
            f"{', '.join(tabular_only)} only apply to the tabular retrain (drop --vision)"
        )
    try:
        from pipelines.vision import retrain
    except ImportError as exc:
        raise SystemExit(
            f"vision is not installed ({exc}): pip install -e '.[vision]' (make setup does)"
        ) from None
    argv = [f"--trigger={args.trigger}", f"--who={args.who}", f"--reasons={args.reasons}"]
    for flag, value in (
        ("--event-id", args.event_id),
        ("--lock-fd", args.lock_fd),
        ("--lock-lease", args.lock_lease),
        ("--epochs", args.epochs),
        ("--imgsz", args.imgsz),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.no_promote:
        argv.append("--no-promote")
    return retrain.main(argv)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Replay the demo stream against the running API, with feedback and a reviewer."""
    from pipelines.demo.simulate import SimulationConfig, run

    config = SimulationConfig(
        api=args.api or f"http://{settings.api_host}:{settings.api_port}",
        in_distribution=args.in_distribution,
        shifted=args.shifted,
        rate=args.rate,
        feedback_share=args.feedback_share,
        answer_share=args.answer_share,
        wait=args.wait,
        seed=args.seed,
        api_key=settings.api_key,
        demo=settings.demo,
    )
    _print(run(config))
    return 0


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    # Imported by name, like the API's app: `pipelines` does not depend on `dashboard`.
    import importlib

    importlib.import_module("dashboard.app").run(settings)
    return 0


def cmd_compact(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.models.registry import kept_snapshots
    from pipelines.store import Store

    store = Store.open(settings)
    _print(store.compact(kept_snapshots(settings), older_than_hours=args.older_than_hours))
    return 0


def cmd_repair(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from pipelines.store import Store
    from pipelines.store.repair import repair_inlined_features

    store = Store.open(settings)  # from here on, feature rows are only written as Parquet
    _print([asdict(r) for r in repair_inlined_features(store.lake, store.dataset_schema())])
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.models import promotion
    from pipelines.models.registry import Registry
    from pipelines.store import Store

    registry = Registry.from_settings(settings)
    if args.action == "list":
        rows = [
            {
                "version": v.version,
                "aliases": v.aliases,
                "snapshot_id": v.snapshot_id,
                "accuracy": v.metrics.get("accuracy"),
                "macro_f1": v.metrics.get("macro_f1"),
                "n_train": v.tags.get("n_train"),
            }
            for v in registry.versions()
        ]
        _print(rows)
        return 0
    from pipelines.loop import rollouts

    store = Store.open(settings)
    who = os.environ.get("USER", "cli")
    try:
        if args.action in ("promote", "shadow", "canary") and not args.version:
            raise SystemExit(f"driftlab models {args.action} VERSION")
        if args.action == "promote":
            _print(promotion.promote(store, registry, args.version, who=who, why=args.why))
        elif args.action == "rollback":
            _print(promotion.rollback(store, registry, who=who, why=args.why))
        elif args.action in ("shadow", "canary"):
            default = 1.0 if args.action == "shadow" else settings.rollout_canary_share
            share = default if args.share is None else args.share
            _print(
                rollouts.start(
                    store,
                    registry,
                    mode=args.action,
                    version=args.version,
                    share=share,
                    who=who,
                    why=args.why,
                )
            )
        elif args.action == "rollout":
            _print(rollouts.status(settings, store, registry))
        elif args.action == "stop-rollout":
            _print(rollouts.stop(store, registry, who=who, why=args.why))
        else:  # promote-rollout
            _print(rollouts.promote_now(store, registry, who=who, why=args.why))
    except (promotion.PromotionError, rollouts.RolloutError) as exc:
        raise SystemExit(str(exc)) from None
    return 0


def bootstrap(settings: Settings) -> None:
    """Create the store and, if no champion exists, train the first one on the demo data."""
    from pipelines.models.registry import CHAMPION, Registry
    from pipelines.store import Store

    Store.open(settings).close()
    registry = Registry.from_settings(settings)
    if registry.alias_version(CHAMPION) is None:
        logger.info("no champion yet: training a first model (notebooks/train.ipynb)")
        from pipelines.ops.notebooks import run_notebook

        run_notebook("train", settings, {"seed_demo": True, "promote": True})


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Bootstrap, then run every process until Ctrl-C."""
    if args.cluster:
        return _up_cluster(args, settings)
    bootstrap(settings)
    check_bind(settings.api_host, settings)
    env = {**os.environ, **settings.process_env()}
    commands = {
        name: [sys.executable, "-m", "pipelines.cli", name]
        for name in ("api", "worker", "dashboard")
    }
    base = f"http://{settings.api_host}:{settings.api_port}"
    banner = (
        f"\ndriftlab is up\n  API        {base}  (docs: {base}/docs, metrics: {base}/metrics)\n"
        f"  dashboard  http://127.0.0.1:{settings.dashboard_port}\n"
        f"  worker     drift check every {settings.check_interval:.0f} s, "
        f"labeling queue every {settings.queue_interval:.0f} s\n"
    )
    if args.observe or settings.observe:
        commands.update(observe.commands(settings, observe.render(settings)))
        banner += _observe_banner(settings)
    banner += (
        f"  logs       {settings.logs_dir}\n"
        "Watch the loop turn: `make simulate` in another terminal.\n"
        f"  data       {settings.data_dir}\nCtrl-C stops everything.\n\n"
    )
    return supervisor.run_all(commands, env, started=lambda _: sys.stdout.write(banner))


def _replicas(text: str) -> int:
    """`--cluster N`: how many API replicas, 1 to 16."""
    if not text.isdigit() or not 1 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(
            f"expected a number of API replicas, 1 to 16, got {text!r}"
        )
    return int(text)


def _up_cluster(args: argparse.Namespace, settings: Settings) -> int:
    """`up --cluster N`: PostgreSQL, an object store, N API replicas, two workers and the
    dashboard on one machine, each process with its own data dir (`pipelines.ops.cluster`)."""
    from pipelines.ops.cluster import ClusterLayout

    check_bind(settings.api_host, settings)
    layout = ClusterLayout.from_settings(
        settings, args.cluster, pg_port=args.pg_port, s3_port=args.s3_port
    )
    pg, s3 = layout.start_services()
    try:
        bootstrap(layout.settings("bootstrap"))
        procs = layout.processes()
        return supervisor.run_all(
            {name: [sys.executable, "-m", *argv] for name, (argv, _) in procs.items()},
            dict(os.environ),
            env_of={name: env for name, (_, env) in procs.items()},
            restart=True,
            started=lambda running: sys.stdout.write(
                layout.banner(layout.active_worker(running)) + "Ctrl-C stops everything.\n\n"
            ),
        )
    finally:
        s3.stop()
        pg.stop()


def cmd_observe(args: argparse.Namespace, settings: Settings) -> int:
    """Prometheus and Alertmanager on the shipped configuration, until Ctrl-C."""
    rendered = observe.render(settings)
    banner = (
        f"\nwatching the API at {observe.api_address(settings)}\n"
        + _observe_banner(settings)
        + f"  config     {settings.relative(rendered.folder)}\nCtrl-C stops them.\n\n"
    )
    return supervisor.run_all(
        observe.commands(settings, rendered),
        os.environ,
        started=lambda _: sys.stdout.write(banner),
    )


def _observe_banner(settings: Settings) -> str:
    at = observe.urls(settings)
    return f"  prometheus {at['prometheus']}\n  alerts     {at['alertmanager']}\n"


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftlab",
        description="Self-hosted closed-loop ML workbench: serve, log, monitor, label, retrain.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"driftlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "up",
        help="set up the store, train a first model on the demo data if none, start all",
        description="Create the store; if no champion exists, seed the demo data "
        "(DRIFTLAB_DEMO: digits by default, or survey) and train a first model; then run the "
        "API, the worker and the dashboard until Ctrl-C.",
    )
    p.add_argument(
        "--observe", action="store_true", help="also Prometheus and Alertmanager (driftlab observe)"
    )
    p.add_argument(
        "--cluster",
        type=_replicas,
        metavar="N",
        default=0,
        help="the layout for several machines, on this one: PostgreSQL, an S3 server, N API "
        "replicas from the API port on, two workers (one standing by) and the dashboard",
    )
    p.add_argument(
        "--pg-port", type=int, default=54329, help="with --cluster: PostgreSQL's port (54329)"
    )
    p.add_argument(
        "--s3-port", type=int, default=9000, help="with --cluster: the S3 server's port (9000)"
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "observe",
        help="run Prometheus (:9090) and Alertmanager (:9093) with ops/'s configuration",
        description="Prometheus scrapes the API and evaluates ops/prometheus/rules; "
        "Alertmanager sends retrain-worthy alerts to the API's /webhook/alert with the API key. "
        "Needs Debian's prometheus and prometheus-alertmanager packages.",
    )
    p.set_defaults(func=cmd_observe)

    p = sub.add_parser("api", help="run the REST API (FastAPI on :8000)")
    p.add_argument("--host", help="bind address (default DRIFTLAB_API_HOST)")
    p.add_argument("--port", type=int, help="port (default DRIFTLAB_API_PORT)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("train", help="train and register a model (runs notebooks/train.ipynb)")
    p.add_argument("--estimator", default="random_forest", help="random_forest, extra_trees, …")
    p.add_argument("--n-estimators", type=int, help="trees (forests)")
    p.add_argument("--max-depth", type=int, help="tree depth (forests)")
    p.add_argument("--test-size", type=float, default=0.2, help="held-out share")
    p.add_argument("--random-state", type=int, default=42, help="seed")
    p.add_argument("--snapshot-id", type=int, default=-1, help="lake snapshot (-1: latest)")
    p.add_argument("--no-promote", action="store_true", help="register without promoting")
    p.add_argument(
        "--no-demo",
        action="store_true",
        help="don't seed an empty store with the demo data (DRIFTLAB_DEMO: digits or survey)",
    )
    p.add_argument(
        "--vision",
        action="store_true",
        help="bootstrap the first vision model instead: demo digit images seeded (unless "
        "images are there), YOLO trained, registered and promoted (make train-vision)",
    )
    p.add_argument("--task", choices=["detect", "classify"], help="vision task (--vision)")
    p.add_argument("--epochs", type=int, help="vision training epochs (--vision)")
    p.add_argument("--imgsz", type=int, help="vision input side in pixels (--vision)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("drift", help="drift report now (runs notebooks/drift_report.ipynb)")
    p.add_argument("--window-size", type=int, default=1000, help="predictions in the window")
    p.add_argument("--no-evidently", action="store_true", help="skip the Evidently HTML report")
    p.add_argument(
        "--vision",
        action="store_true",
        help="the vision model's image check (notebooks/drift_report_vision.ipynb)",
    )
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("retrain", help="retrain, gate and promote (runs notebooks/retrain.ipynb)")
    p.add_argument("--trigger", default="manual", help="what started it (kept in the audit)")
    p.add_argument("--who", default=os.environ.get("USER", "cli"), help="who asked for it")
    p.add_argument("--reasons", default="[]", help="JSON list of reasons")
    p.add_argument("--event-id", help="the run's id (set by `trigger`)")
    p.add_argument("--estimator", help="estimator (default: the champion's)")
    p.add_argument("--optuna-trials", type=int, help="Optuna trials (0: no search)")
    p.add_argument("--optuna-timeout", type=float, help="seconds the search may take")
    p.add_argument("--no-promote", action="store_true", help="register the challenger only")
    p.add_argument(
        "--vision",
        action="store_true",
        help="retrain the vision model (fine-tune the YOLO champion on its images plus the "
        "reviewed labels, gate, promote) instead of the tabular one",
    )
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (--vision)")
    p.add_argument("--imgsz", type=int, help="input side in pixels (--vision)")
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # inherited from `trigger`
    p.add_argument("--lock-lease", help=argparse.SUPPRESS)  # the lease `trigger` took
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser(
        "simulate",
        help="replay demo traffic with feedback and a reviewer",
        description="Replay the demo stream (DRIFTLAB_DEMO: digits by default, or survey; the "
        "same demo `driftlab up` trained on) against the running API: the training population, "
        "then the shift, with feedback and a reviewer working through the labeling queue.",
    )
    p.add_argument("--api", help="API base URL (default from DRIFTLAB_API_HOST/PORT)")
    p.add_argument(
        "--in-distribution",
        type=int,
        default=600,
        help="rows before the shift (at most the demo's: 200 digits, 967 survey answers)",
    )
    p.add_argument(
        "--shifted", type=int, help="shifted rows (default: all, 697 digits or 2,496 answers)"
    )
    p.add_argument("--rate", type=float, default=40.0, help="rows per second")
    p.add_argument("--feedback-share", type=float, default=0.25, help="predictions given a label")
    p.add_argument("--answer-share", type=float, default=0.8, help="queue items labeled")
    p.add_argument("--wait", type=float, default=180.0, help="seconds to watch for a retrain")
    p.add_argument("--seed", type=int, default=0, help="seed of the stream and every choice")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("dashboard", help="run the Dash dashboard (:8050)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("worker", help="drift checks, the labeling queue, retraining, compaction")
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "models", help="list, promote or roll back registered models; shadow and canary rollouts"
    )
    p.add_argument(
        "action",
        choices=[
            "list",
            "promote",
            "rollback",
            "shadow",
            "canary",
            "rollout",
            "stop-rollout",
            "promote-rollout",
        ],
        help="rollout: the running rollout's figures and verdict",
    )
    p.add_argument("version", nargs="?", help="version to promote, shadow or canary")
    p.add_argument(
        "--share",
        type=float,
        help="share of requests a shadow answers (default 1) or a canary serves "
        "(default DRIFTLAB_ROLLOUT_CANARY_SHARE)",
    )
    p.add_argument("--why", default="manual", help="reason, kept in the audit trail")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("compact", help="merge small files, expire old snapshots (keeps trained-on)")
    p.add_argument("--older-than-hours", type=float, default=24.0, help="expire snapshots older")
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser(
        "repair",
        help="recover feature values DuckLake's catalog inlining changed (quotes, -0.0)",
    )
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("init", help="create the store's tables")
    p.set_defaults(func=cmd_init)
    _register_vision(sub)
    return parser


def _register_vision(sub: Any) -> None:
    """`driftlab stream` (the edge client), when the `vision` extra is installed."""
    try:
        from pipelines.vision import edge_client
    except ImportError:
        return
    edge_client.register(sub)


def main(argv: list[str] | None = None) -> int:
    supervisor.follow()  # started by `driftlab up`: die with it
    args = build_parser().parse_args(argv)
    settings = get_settings()
    name = args.command if args.command in logs.PROCESSES else None
    logs.configure(args.verbose, settings, name)
    os.environ.update(settings.process_env())
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
