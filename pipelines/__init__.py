"""driftlab's library: everything the API, the dashboard, the notebooks and the CLI call.

Its layout is drawn in docs/architecture.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("driftlab")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
