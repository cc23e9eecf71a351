"""The one place that makes Ultralytics safe to import and train with no internet.

Ultralytics reaches out to the network in several quiet ways: it downloads ``Arial.ttf`` the first
time it draws a plot, it sends usage events when ``sync`` is on, it installs missing packages unless
``YOLO_AUTOINSTALL`` is false, and its MLflow/ClearML/Comet/DVC/Ray Tune callbacks log every
training run wherever their environment points (the MLflow one would write into our registry behind
``pipelines/models/registry.py``'s back). It also reads ``YOLO_CONFIG_DIR`` exactly once, when
``ultralytics`` is first imported, and writes its settings file and fonts there; without it, they
land in ``~/.config``, outside our data dir.

So every module of ``pipelines.vision`` that needs Ultralytics calls :func:`prepare_offline`
before importing it. The call is idempotent and cheap after the first time.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Ultralytics looks these names up under <YOLO_CONFIG_DIR>/Ultralytics before downloading them.
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")

# Integrations that log training runs to outside services or to an MLflow of their choosing.
INTEGRATIONS_OFF = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")

_lock = threading.Lock()
_prepared: dict[str, str] = {}


def prepare_offline(
    config_dir: Path | None = None,
    *,
    runs_dir: Path | None = None,
    datasets_dir: Path | None = None,
    weights_dir: Path | None = None,
) -> Path:
    """Point Ultralytics at our folders and switch off everything that would go online.

    Call it before ``import ultralytics`` (the environment variables only count then); calling
    it again later is harmless: directories it is given replace those in Ultralytics' settings,
    and directories it is not given keep what an earlier call chose.

    Args:
        config_dir: Folder for Ultralytics' settings file and fonts. Default: the
            ``YOLO_CONFIG_DIR`` already in the environment, else ``<data_dir>/yolo`` from the
            driftlab settings. Once ``ultralytics`` is imported its folder is fixed; a different
            one here is then ignored with a warning.
        runs_dir: Where Ultralytics puts runs when a call gives no ``project``
            (default ``<config_dir>/runs``; ``pipelines.vision.yolo`` always gives one).
        datasets_dir: Where Ultralytics resolves relative dataset paths (default
            ``<config_dir>/datasets``; our data.yaml files hold absolute paths).
        weights_dir: Where Ultralytics keeps downloaded weights (default
            ``<config_dir>/weights``; nothing is downloaded, but the default is outside ours).

    Returns:
        The effective config dir (the ``YOLO_CONFIG_DIR``).
    """
    with _lock:
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_AUTOINSTALL"] = "false"
        config = _effective_config_dir(config_dir)
        os.environ["YOLO_CONFIG_DIR"] = str(config)
        _install_fonts(config / "Ultralytics")
        given = {"runs_dir": runs_dir, "datasets_dir": datasets_dir, "weights_dir": weights_dir}
        wanted = {}
        for key, value in given.items():
            if value is not None:
                wanted[key] = str(Path(value).expanduser().resolve())
            elif _prepared.get("config") == str(config):
                wanted[key] = _prepared[key]  # a bare call keeps what an earlier one chose
            else:
                wanted[key] = str(config / key.removesuffix("_dir"))
        if _prepared != {"config": str(config), **wanted}:
            _update_settings(wanted)
            _prepared.clear()
            _prepared.update({"config": str(config), **wanted})
        return config


def _effective_config_dir(requested: Path | None) -> Path:
    """The folder Ultralytics reads, which cannot move once it is imported."""
    if "ultralytics.utils" in sys.modules:
        user_dir: Path = sys.modules["ultralytics.utils"].USER_CONFIG_DIR
        actual = user_dir.parent.resolve()
        if requested is not None and requested.expanduser().resolve() != actual:
            logger.warning(
                "ultralytics was imported before prepare_offline; its config dir stays %s (not %s)",
                actual,
                requested,
            )
        return actual
    if requested is not None:
        return requested.expanduser().resolve()
    if env := os.environ.get("YOLO_CONFIG_DIR"):
        return Path(env).expanduser().resolve()
    from pipelines.settings import get_settings

    return get_settings().data_dir / "yolo"


def _install_fonts(folder: Path) -> None:
    """Copy matplotlib's DejaVuSans under the names Ultralytics would otherwise download."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        target = folder / name
        if target.exists():
            continue
        # Another process may be doing the same: write aside, then rename over atomically.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _update_settings(dirs: dict[str, str]) -> None:
    from ultralytics.utils import SETTINGS

    wanted: dict[str, Any] = {"sync": False, **dict.fromkeys(INTEGRATIONS_OFF, False), **dirs}
    changed = {k: v for k, v in wanted.items() if SETTINGS.get(k) != v}
    if changed:
        # Each update rewrites the settings file: only when something differs.
        SETTINGS.update(changed)
        logger.debug("ultralytics settings updated: %s", sorted(changed))
