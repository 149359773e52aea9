"""Where the commands print: a terminal's width, or no width limit when the output goes to a pipe or a file.

Rich lays out for 80 columns when it cannot ask a terminal, so `revdaemon dead-letters list | less` cut or folded
every long error and id. Piped, lines are as long as their content; a person's terminal still gets tables that fit.
"""

from __future__ import annotations

import sys

from rich.console import Console

PIPED_WIDTH = 100_000  # wide enough for any row: a table takes its content's width, never this


def console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)
