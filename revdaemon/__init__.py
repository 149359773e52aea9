"""revdaemon: keeps Nue and Salesforce in sync from one process, one SQLite file, one systemd unit."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("revdaemon")  # the installed distribution's, so it cannot drift from pyproject.toml
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
