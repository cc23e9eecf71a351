"""Run every `benchmarks/bench_*.py` in turn: `python -m benchmarks [--quick] [--only NAME]`.

A module with a `main(quick: bool)` function is imported and called; one without is run as a
script (`python benchmarks/bench_x.py [--quick]`) in a subprocess. One failing benchmark does not
stop the others; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Names (without the `bench_` prefix) of the benchmark modules, in file-name order."""
    return [p.stem.removeprefix("bench_") for p in sorted(HERE.glob("bench_*.py"))]


def run_one(name: str, quick: bool) -> bool:
    """Run one benchmark; True if it finished without an error."""
    module_name = f"benchmarks.bench_{name}"
    module = importlib.import_module(module_name)
    entry = getattr(module, "main", None)
    if callable(entry):
        params = inspect.signature(entry).parameters
        result = entry(quick=quick) if "quick" in params else entry()
        return not (isinstance(result, int) and not isinstance(result, bool) and result != 0)
    cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *(["--quick"] if quick else [])]
    return subprocess.run(cmd, cwd=HERE.parent, check=False).returncode == 0


def main(argv: list[str] | None = None) -> int:
    names = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable); one of: {', '.join(names) or 'none found'}",
    )
    args = parser.parse_args(argv)
    chosen = names
    if args.only:
        wanted = [n.removeprefix("bench_").removesuffix(".py") for n in args.only]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
        chosen = [n for n in names if n in wanted]
    if not chosen:
        parser.error("no benchmarks/bench_*.py found")

    failed = []
    for name in chosen:
        sys.stdout.write(f"\n=== bench_{name} {'(quick) ' if args.quick else ''}===\n")
        sys.stdout.flush()
        started = time.perf_counter()
        try:
            ok = run_one(name, args.quick)
        except (Exception, SystemExit) as exc:
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                ok = True
            else:
                ok = False
                if isinstance(exc, SystemExit):
                    sys.stderr.write(f"bench_{name}: {exc.code}\n")
                else:
                    traceback.print_exc()
        took = time.perf_counter() - started
        sys.stdout.write(f"=== bench_{name}: {'ok' if ok else 'FAILED'} in {took:.0f} s\n")
        sys.stdout.flush()
        if not ok:
            failed.append(name)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
