"""One progress helper for every long loop: a tqdm bar on a terminal, plain periodic lines in a piped log.

    with progress_bar(total=len(batches), desc="landscape", unit="point") as bar:
        for ...:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

tqdm redraws its bar with carriage returns, which a log file or CI console keeps as one endless line (or
thousands); when the stream is not a terminal, :class:`PlainProgress` instead writes one ordinary line at most
every ``every_seconds`` (done/total, rate, time left, the postfix) and a closing line if it wrote any, so short
steps stay silent and long ones leave a readable trail.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

EVERY_SECONDS = 30.0  # between two plain lines; a module setting so a test (or a chatty CI) can change it


class NoProgress:
    """What a disabled progress display is: every call does nothing."""

    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlainProgress(NoProgress):
    """Periodic plain lines: ``desc: 120/441 point (27%), 3.1 point/s, ~104 s left, loss=2.31``."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", stream: TextIO | None = None,
                 every_seconds: float | None = None, clock=time.monotonic):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream, self.clock = stream or sys.stderr, clock
        self.every = EVERY_SECONDS if every_seconds is None else every_seconds
        self.done, self.postfix, self.lines = 0, {}, 0
        self.start = self.last = clock()

    def update(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self._write(now)

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.lines:  # the trail of a long step ends with its total time
            elapsed = self.clock() - self.start
            print(f"{self.desc}: {self.done:.4g} {self.unit} done in {elapsed:.0f} s", file=self.stream, flush=True)
            self.lines = 0

    def _write(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.done:.4g}/{self.total:.4g} {self.unit} ({100 * self.done / self.total:.0f}%)" if self.total
                 else f"{self.done:.4g} {self.unit}", f"{rate:.3g} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"~{(self.total - self.done) / rate:.0f} s left")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        print(f"{self.desc}: " + ", ".join(parts), file=self.stream, flush=True)
        self.lines += 1


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True,
                 stream: TextIO | None = None, every_seconds: float | None = None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, :class:`PlainProgress` lines when it is not,
    :class:`NoProgress` when disabled. All three take update, set_postfix and close, and work as context
    managers."""
    if not enabled:
        return NoProgress()
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=stream, dynamic_ncols=True)
    return PlainProgress(total, desc, unit, stream, every_seconds)

