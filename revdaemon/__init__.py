"""revdaemon: keeps Nue and Salesforce in sync from one process, one SQLite file, one systemd unit."""

from __future__ import annotations

__version__ = "0.1.0"
