"""Progress lines for the long steps of the command line (g++ builds, C-simulation, tracing,
calibration, TVM compile and tuning), on stderr so stdout keeps only results (and ``--json``).

On a terminal a step is a spinner with its elapsed time; in a log (stderr not a TTY, e.g. CI)
it is plain lines that stay there::

    [  0.4s] building C-simulation (g++) ...
    [  3.6s] building C-simulation (g++) ... done (3.2 s)

The bracket is the time since the command started; updates from inside a step (tuning
trials, benchmark phases) are printed at most every ``UPDATE_EVERY_S`` seconds in a log.
"""

from __future__ import annotations

import re
import sys
import time
from contextlib import contextmanager

_START = time.monotonic()
UPDATE_EVERY_S = 2.0
LINE = re.compile(r"^\[\s*\d+\.\ds\] ")  # how every progress line in a log begins


def _stamp() -> str:
    return f"[{time.monotonic() - _START:5.1f}s]"


class Step:
    """One running step: ``update(message)`` changes its text; ``seconds`` is its duration so far."""

    def __init__(self, message: str, stream, live):
        self.message = message
        self.stream = stream
        self.live = live                      # rich Status on a terminal, else None
        self.started = time.monotonic()
        self._last_line = self.started

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def update(self, message: str) -> None:
        self.message = message
        if self.live is None and time.monotonic() - self._last_line >= UPDATE_EVERY_S:
            self._last_line = time.monotonic()
            print(f"{_stamp()} {message}", file=self.stream, flush=True)

    def __rich__(self) -> str:  # the spinner's text, redrawn with the elapsed time
        from rich.markup import escape

        return f"{escape(self.message)} [dim]({self.seconds:.1f} s)[/]"


@contextmanager
def progress(message: str, stream=None):
    """``with progress("building C-simulation (g++) ...") as step:`` around a long step.

    Prints ``... done (T s)`` when it ends, ``... failed (T s)`` when it raises (the error
    itself is reported by the caller)."""
    stream = stream if stream is not None else sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    if tty:
        from rich.console import Console
        from rich.status import Status

        step = Step(message, stream, None)
        step.live = Status(step, console=Console(file=stream))
        step.live.start()
    else:
        step = Step(message, stream, None)
        print(f"{_stamp()} {message}", file=stream, flush=True)
    first = message
    outcome = "failed"
    try:
        yield step
        outcome = "done"
    finally:
        if step.live is not None:
            step.live.stop()
        print(f"{_stamp()} {first} {outcome} ({step.seconds:.1f} s)", file=stream, flush=True)
