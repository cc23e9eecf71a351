"""Real PostgreSQL and S3-compatible servers on this machine, for `driftlab up --cluster N`
and for the tests that need them.

`LocalPostgres` runs Debian's PostgreSQL (`apt-get install postgresql`) on a folder it owns:
the cluster in `root/pgdata`, its log in `root/postgres.log`, its unix socket in `root`,
listening on 127.0.0.1 only. PostgreSQL refuses to run as root, so when this process is root
the server runs as the `postgres` OS user the Debian package creates, and `root` is handed to
it. It is tuned for a test or dev box without giving up durability: fsync and synchronous
commits stay on, so what a client committed survives that client, or the server, being killed.

`LocalS3` runs moto's S3 server as a child process. Moto keeps objects in memory, so a restart
of it loses them: it is for trying the cluster on one machine. A real deployment points the
settings at MinIO or S3 instead.

Neither is started at import time; both are context managers (`with LocalS3(port) as s3:`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)

POSTGRES_OS_USER = "postgres"
INSTALL_POSTGRES = "apt-get install postgresql (`make test` does it)"
# sun_path is 108 bytes on Linux, its terminating NUL included.
MAX_SOCKET_PATH = 107
START_TIMEOUT_S = 60.0


def postgres_bin(name: str) -> Path:
    """The PostgreSQL program `name` (`initdb`, `pg_ctl`, …): on PATH first, else in the
    newest `/usr/lib/postgresql/<version>/bin`, where Debian installs it off PATH."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = [p for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}") if p.is_file()]
    if candidates:
        return max(candidates, key=lambda p: _version_key(p.parents[1].name))
    raise RuntimeError(
        f"PostgreSQL's {name} is not on PATH nor in /usr/lib/postgresql/*/bin: {INSTALL_POSTGRES}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class _Server:
    """`with Server(...) as server:` starts it and stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalPostgres(_Server):
    """A PostgreSQL cluster in `root`, on 127.0.0.1:`port`, whose superuser is `user`.

    `start` makes the cluster the first time (trust authentication: only this machine can
    reach it) and starts it; `stop` stops it. The data stays in `root/pgdata` between the two,
    so a later `start` on the same root finds every committed row.

    Args:
        root: a folder this object owns; made if missing.
        port: the TCP port to listen on, on 127.0.0.1 only.
        user: the database superuser's name.
    """

    def __init__(self, root: Path, port: int, *, user: str = "postgres") -> None:
        self.root = Path(root).absolute()
        self.port = port
        self.user = user

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the cluster runs (it is no child of ours:
        pg_ctl starts it as a daemon), else None."""
        lines = _postmaster_pid_lines(self.pgdata)
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        return pid if _alive(pid) else None

    def start(self) -> Self:
        """Make the cluster if `root` has none, and start it; waits until it takes
        connections. Starting a cluster that already runs on this port does nothing."""
        if self.pid is not None:
            lines = _postmaster_pid_lines(self.pgdata)
            running_port = lines[3].strip() if len(lines) > 3 else "?"
            if running_port != str(self.port):
                raise RuntimeError(
                    f"the cluster in {self.root} already runs on port {running_port}, "
                    f"not {self.port}: stop it first"
                )
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        owner = self._os_user()
        if owner is not None:
            _hand_over(self.root, owner)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._write_config()
        pg_ctl = postgres_bin("pg_ctl")
        started = self._run(
            [
                str(pg_ctl),
                "start",
                "--wait",
                f"--timeout={int(START_TIMEOUT_S)}",
                "--silent",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
            ],
        )
        if started.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL did not start in {self.root} on port {self.port}: "
                f"{started.stdout.strip()}\n{_tail(self.log_file)}"
            )
        logger.info("PostgreSQL on 127.0.0.1:%d, data in %s", self.port, self.pgdata)
        return self

    def stop(self) -> None:
        """Stop the cluster (fast: open sessions are rolled back); nothing if it is stopped."""
        if self.pid is None:
            return
        owner = self._os_user()
        if owner is not None:  # a folder above may have been closed again (pytest does)
            _hand_over(self.root, owner)
        stopped = self._run(
            [str(postgres_bin("pg_ctl")), "stop", "--wait", "-m", "fast", "-D", str(self.pgdata)]
        )
        pid = self.pid
        if stopped.returncode != 0 and pid is not None:
            os.kill(pid, signal.SIGINT)  # what `pg_ctl stop -m fast` sends
            deadline = time.monotonic() + START_TIMEOUT_S
            while self.pid is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.pid is not None:
                raise RuntimeError(
                    f"PostgreSQL in {self.root} did not stop: {stopped.stdout.strip()}"
                )

    def create_database(self, name: str) -> None:
        """Create the database `name` unless it exists."""
        import psycopg

        from pipelines.store.sql import identifier

        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if exists.fetchone() is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a racing caller
                    conn.execute(f"CREATE DATABASE {identifier(name)}")

    def conninfo(self, dbname: str) -> str:
        """A libpq connection string for `dbname` (psycopg, psql, DuckDB's postgres)."""
        return f"dbname={dbname} host=127.0.0.1 port={self.port} user={self.user}"

    def sqlalchemy_url(self, dbname: str) -> str:
        """A SQLAlchemy URL for `dbname` over psycopg 3 (MLflow's backend store takes it)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def _os_user(self) -> pwd.struct_passwd | None:
        """The OS user the server runs as: None for this process's own user, `postgres`
        when this process is root (PostgreSQL refuses to run as root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root, PostgreSQL needs the unprivileged OS user "
                f"{POSTGRES_OS_USER!r}, which {INSTALL_POSTGRES} creates"
            ) from None

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as the server's OS user, in `root` (the user may not be
        allowed into this process's working directory), its output captured."""
        owner = self._os_user()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        kwargs: dict[str, Any] = {}
        if owner is not None:
            env.update(HOME=owner.pw_dir, USER=owner.pw_name, LOGNAME=owner.pw_name)
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        return subprocess.run(
            cmd,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            **kwargs,
        )

    def _initdb(self) -> None:
        done = self._run(
            [
                str(postgres_bin("initdb")),
                "-D",
                str(self.pgdata),
                "-A",
                "trust",
                "-U",
                self.user,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",  # only initdb's own files; the server itself still syncs
            ]
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.pgdata}:\n{done.stdout.strip()}")
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as out:
            out.write("\n# driftlab's settings, rewritten at each start\ninclude 'driftlab.conf'\n")

    def _write_config(self) -> None:
        """`pgdata/driftlab.conf`, rewritten at each start so the port may change."""
        socket_path = self.root / f".s.PGSQL.{self.port}"
        if len(str(socket_path).encode()) > MAX_SOCKET_PATH:
            logger.warning("%s is too long for a unix socket: TCP on 127.0.0.1 only", self.root)
            socket_dirs = ""
        else:
            socket_dirs = str(self.root)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": socket_dirs,
            # Each driftlab process (API workers, worker, dashboard) holds several connections.
            "max_connections": 200,
            # No replication here: WAL only for crash recovery, lighter bulk loads.
            "wal_level": "minimal",
            "max_wal_senders": 0,
            "log_line_prefix": "%m [%p] ",
        }
        lines = [f"{key} = {_conf_value(value)}" for key, value in settings.items()]
        path = self.pgdata / "driftlab.conf"
        path.write_text("\n".join(lines) + "\n")
        owner = self._os_user()
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)


class LocalS3(_Server):
    """Moto's S3 server on 127.0.0.1:`port`, a child of this process.

    Any key works against moto; `key_id`, `secret` and `region` are what clients are given,
    so they are configured exactly as against a real S3.

    Args:
        port: the TCP port to listen on, on 127.0.0.1 only.
        key_id: the access key id clients use.
        secret: the secret access key clients use.
        region: the region clients name.
        log: a file for the server's output (appended to); None discards it.
    """

    def __init__(
        self,
        port: int,
        *,
        key_id: str = "driftlab",
        secret: str = "driftlab-secret",
        region: str = "us-east-1",
        log: Path | None = None,
    ) -> None:
        self.port = port
        self.key_id = key_id
        self.secret = secret
        self.region = region
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def start(self) -> Self:
        """Start the server and wait until it answers. It stays in this process's group,
        so a Ctrl-C in the terminal reaches it too."""
        if self.pid is not None:
            return self
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is taken: choose another")
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with contextlib.ExitStack() as files:
            output: Any = subprocess.DEVNULL
            if self.log is not None:
                self.log.parent.mkdir(parents=True, exist_ok=True)
                output = files.enter_context(self.log.open("ab"))
            self.process = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        logger.info("moto's S3 on %s", self.endpoint)
        return self

    def stop(self) -> None:
        """Stop the server: terminate, then kill if it has not ended in 10 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing: no DNS per bucket)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        """Create the bucket `name` unless this server has it."""
        client = self.client()
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":  # S3 refuses a location constraint naming us-east-1
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            client.create_bucket(**kwargs)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                where = f"see {self.log}" if self.log else "pass log= to see its output"
                raise RuntimeError(
                    f"moto's S3 server exited with {self.process.returncode} ({where})"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answered, if not with 200
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto's S3 server did not answer on {self.endpoint} in time")


def _version_key(version: str) -> tuple[int, ...]:
    """`15` → (15,), `9.6` → (9, 6); a folder that is no version sorts first."""
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (-1,)


def _postmaster_pid_lines(pgdata: Path) -> list[str]:
    """The lines of `postmaster.pid` (pid, data dir, start time, port, …), [] if none."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, run by another user
    return True


def _hand_over(root: Path, owner: pwd.struct_passwd) -> None:
    """Make `root` the server user's and let that user reach it.

    The user needs search permission on every folder above `root` (pytest's temporary
    folders, a home folder, are 0700): where one lacks it, the search bit alone is added,
    which lets no one list that folder.
    """
    if root.stat().st_uid != owner.pw_uid:
        for path in [root, *root.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    groups = {owner.pw_gid}
    for folder in root.parents:
        info = folder.stat()
        if info.st_uid == owner.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            logger.warning("letting %s search %s, above its data", owner.pw_name, folder)
            os.chmod(folder, stat.S_IMODE(info.st_mode) | bit)


def _conf_value(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
