"""quantorch: a quant-trading orchestrator.

An orchestrator decides, per ticker and decision time, which priced analysis tools to call and
what position to take; runs are backtested on vectorbt and stored in DuckDB.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quantorch")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
