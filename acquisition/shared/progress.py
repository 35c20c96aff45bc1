"""Progress of a long step, the same way in every command.

On a terminal it is a tqdm bar on stderr. When stderr is a file or a pipe (a
log, CI, ``nohup``) a bar would show only its first state, so instead one line
is logged (logger ``progress``, level INFO) every ``log_every_s`` seconds and
once at the end::

    INFO progress: preprocessing train.h5: 12000/40000 spot (30 %), 2100 spot/s, about 13 s left

A step whose size is unknown (``total=None``) logs what it has done so far.

    with Progress(n_spots, desc="generate map.h5", unit="spot") as progress:
        for chunk in chunks:
            ...
            progress.update(len(chunk))
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")

log = logging.getLogger("progress")

#: Seconds between two progress lines in a log; TWINPLUME_PROGRESS_EVERY_S overrides it.
LOG_EVERY_S = 10.0


def _default_every_s() -> float:
    try:
        return float(os.environ.get("TWINPLUME_PROGRESS_EVERY_S", LOG_EVERY_S))
    except ValueError:
        return LOG_EVERY_S


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar on a terminal, periodic one-line log progress elsewhere."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, enabled: bool = True,
                 initial: int = 0, log_every_s: float | None = None, terminal: bool | None = None,
                 logger: logging.Logger | None = None):
        self.total = None if total is None else int(total)
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self._initial = self.n
        self.enabled = enabled
        self._log = logger or log
        self._every_s = _default_every_s() if log_every_s is None else float(log_every_s)
        self._t0 = self._last_log = time.monotonic()
        self._closed = False
        self._postfix = ""
        use_bar = enabled and (is_terminal() if terminal is None else terminal)
        self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, dynamic_ncols=True,
                         file=sys.stderr) if use_bar else None

    # -- updates --------------------------------------------------------------------------

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last_log >= self._every_s:
            self._log_line()

    def set_postfix(self, refresh: bool = False, **values) -> None:
        """Counts shown after the bar and at the end of the log line."""
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=refresh)

    def close(self, stopped: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._log_line(final=True, stopped=stopped)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(stopped=exc_type is not None)

    # -- the log line ----------------------------------------------------------------------

    def line(self, final: bool = False, stopped: bool = False) -> str:
        """What the log says about this step now."""
        elapsed = time.monotonic() - self._t0
        done_now = self.n - self._initial
        rate = done_now / elapsed if elapsed > 0 else 0.0
        if self.total:
            text = f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f} %)"
        else:
            text = f"{self.desc}: {self.n} {self.unit}"
        if final:
            text += f", stopped after {elapsed:.1f} s" if stopped else f" in {elapsed:.1f} s"
        else:
            text += f", {rate:.3g} {self.unit}/s"
            if self.total and rate > 0 and self.n < self.total:
                text += f", about {(self.total - self.n) / rate:.0f} s left"
        return text + (f"; {self._postfix}" if self._postfix else "")

    def _log_line(self, final: bool = False, stopped: bool = False) -> None:
        self._last_log = time.monotonic()
        self._log.info("%s", self.line(final=final, stopped=stopped))


def progress_iter(iterable: Iterable[T], total: int | None = None, *, desc: str, unit: str = "it",
                  enabled: bool = True, log_every_s: float | None = None) -> Iterator[T]:
    """Iterate and show progress (one step per item)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc=desc, unit=unit, enabled=enabled, log_every_s=log_every_s) as progress:
        for item in iterable:
            yield item
            progress.update(1)


class Step:
    """A step whose progress cannot be counted (one library call, e.g. fitting PLS): logs its start and
    its duration, so a log never goes silent without saying what is running."""

    def __init__(self, desc: str, *, enabled: bool = True, logger: logging.Logger | None = None):
        self.desc = desc
        self.enabled = enabled
        self._log = logger or log
        self.elapsed_s = 0.0

    def __enter__(self) -> "Step":
        self._t0 = time.monotonic()
        if self.enabled:
            self._log.info("%s ...", self.desc)
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.elapsed_s = time.monotonic() - self._t0
        if self.enabled and exc_type is None:
            self._log.info("%s: done in %.1f s", self.desc, self.elapsed_s)
