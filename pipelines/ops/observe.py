"""Prometheus and Alertmanager beside driftlab, configured by what `ops/` ships.

`ops/prometheus/` and `ops/alertmanager/` hold the configuration a team copies into its own
monitoring: it assumes the API on 127.0.0.1:8000 and Alertmanager on :9093. `render` writes a
copy under `data/ops/` that points at this install instead (the API's address, the ports in
the settings, the API key in a file only this user can read), and `commands` runs Debian's
`prometheus` and `prometheus-alertmanager` on it, listening on 127.0.0.1 only, with their
state under `data/ops/`. `driftlab observe` runs them alone; `driftlab up --observe` (or
`DRIFTLAB_OBSERVE=true`) beside the API, worker and dashboard.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.settings import Settings

OPS = Path(__file__).resolve().parents[2] / "ops"
INSTALL = "apt-get install prometheus prometheus-alertmanager (`make observe` does it)"
API_JOB = "driftlab-api"


@dataclass(frozen=True)
class Rendered:
    """Where `render` wrote the configuration, and where the servers keep their state."""

    folder: Path

    @property
    def prometheus_config(self) -> Path:
        return self.folder / "prometheus" / "prometheus.yml"

    @property
    def alertmanager_config(self) -> Path:
        return self.folder / "alertmanager" / "alertmanager.yml"


def api_address(settings: Settings) -> str:
    """host:port that Prometheus and Alertmanager reach the API at."""
    host = settings.api_host
    if host in {"0.0.0.0", "::", ""}:  # bound to every interface: loopback is one of them
        host = "127.0.0.1"
    return f"[{host}]:{settings.api_port}" if ":" in host else f"{host}:{settings.api_port}"


def render(
    settings: Settings, folder: Path | None = None, *, scrape_interval: str | None = None
) -> Rendered:
    """Write the shipped configuration, pointed at this install, under `folder`
    (`data/ops/` by default). `scrape_interval` also sets the rule evaluation interval."""
    out = Rendered(folder or settings.data_dir / "ops")
    api = api_address(settings)

    prometheus = _load(OPS / "prometheus" / "prometheus.yml")
    for job in prometheus["scrape_configs"]:
        if job["job_name"] == API_JOB:
            job["static_configs"] = [{"targets": [api]}]
    alertmanager_at = f"127.0.0.1:{settings.alertmanager_port}"
    prometheus["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager_at]}]}]
    if scrape_interval is not None:
        prometheus["global"]["scrape_interval"] = scrape_interval
        prometheus["global"]["evaluation_interval"] = scrape_interval
    rules = out.prometheus_config.parent / "rules"
    shutil.rmtree(rules, ignore_errors=True)
    shutil.copytree(OPS / "prometheus" / "rules", rules)
    _write(out.prometheus_config, prometheus, "ops/prometheus/prometheus.yml")

    alertmanager = _load(OPS / "alertmanager" / "alertmanager.yml")
    key_file = out.alertmanager_config.parent / "api_key"
    for receiver in alertmanager["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://{api}/webhook/alert"
            if settings.api_key is None:  # nothing to send: the API takes writes without one
                hook.get("http_config", {}).pop("authorization", None)
    out.alertmanager_config.parent.mkdir(parents=True, exist_ok=True)
    key_file.unlink(missing_ok=True)
    if settings.api_key is not None:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(settings.api_key)
    _write(out.alertmanager_config, alertmanager, "ops/alertmanager/alertmanager.yml")
    return out


def commands(settings: Settings, rendered: Rendered) -> dict[str, list[str]]:
    """The two servers' command lines, on 127.0.0.1, state under the rendered folder.

    Raises:
        SystemExit: A binary is missing (with how to install it).
    """
    return {
        "prometheus": [
            _binary("prometheus"),
            f"--config.file={rendered.prometheus_config}",
            f"--storage.tsdb.path={rendered.folder / 'prometheus' / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
            "--log.level=warn",
        ],
        "alertmanager": [
            _binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={rendered.alertmanager_config}",
            f"--storage.path={rendered.folder / 'alertmanager' / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}",
            "--cluster.listen-address=",  # one Alertmanager: no gossip port
            "--log.level=warn",
        ],
    }


def urls(settings: Settings) -> dict[str, str]:
    return {
        "prometheus": f"http://127.0.0.1:{settings.prometheus_port}",
        "alertmanager": f"http://127.0.0.1:{settings.alertmanager_port}",
    }


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    raise SystemExit(f"`{names[0]}` is not installed: {INSTALL}")


def _load(path: Path) -> dict[str, Any]:
    with path.open() as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def _write(path: Path, config: dict[str, Any], source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    path.write_text(f"# Written by `driftlab observe` from {source}: edit that one.\n{text}")
