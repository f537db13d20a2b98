"""Progress reporting for long commands: a one-line TTY bar, or JSON events for build systems.

Events (name, data) come from worker threads: start, layer-start, layer-progress, layer-done,
progress (extract/verify) and done. `--progress json` prints one JSON object per line on stderr
(progress events at most 4 times a second); `--progress tty` (the default when stderr is a
terminal) redraws one line; `--progress none` and a non-TTY stderr print nothing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any

MIN_INTERVAL = 0.25  # seconds between progress lines/events: at most 4 a second
MIB = 1 << 20  # the bar counts in MiB, as the summaries do

_active: TtyBar | None = None


def clear_active() -> None:
    """Erase the bar (if one is drawn) so that a log or error line starts on a clean line."""
    if _active is not None:
        _active.clear()


class Reporter:
    """Base: counts bytes per layer; subclasses render."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.total = 0
        self.layers = 0
        self.done_layers = 0
        self.layer_bytes: dict[int, int] = {}
        self.last = 0.0

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        with self.lock:
            if event == "start":
                self.total = int(data.get("bytes", 0))
                self.layers = int(data.get("layers", 0))
            elif event == "layer-progress":
                self.layer_bytes[data["layer"]] = data["bytes"]
            elif event == "layer-done":
                self.done_layers += 1
            self.handle(event, data)

    @property
    def done_bytes(self) -> int:
        return sum(self.layer_bytes.values())

    def throttled(self) -> bool:
        now = time.monotonic()
        if now - self.last < MIN_INTERVAL:
            return True
        self.last = now
        return False

    def handle(self, event: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonEvents(Reporter):
    def handle(self, event: str, data: dict[str, Any]) -> None:
        if event in ("layer-progress", "progress"):
            if self.throttled():
                return
            if event == "layer-progress":  # index-layout and verify: totals over all layers
                data = {"bytes": self.done_bytes, "total": self.total,
                        "layers_done": self.done_layers, "layers": self.layers}
            event = "progress"  # extract passes its own files/bytes through
        record = {"event": event, "time": round(time.monotonic() - self.t0, 3), **data}
        self.stream.write(json.dumps(record, sort_keys=True) + "\n")
        self.stream.flush()


class TtyBar(Reporter):
    WIDTH = 24

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self.drawn = False
        global _active
        _active = self

    def handle(self, event: str, data: dict[str, Any]) -> None:
        if event == "done":
            self._clear()
            return
        if event in ("layer-progress", "progress") and self.throttled():
            return
        self._draw(data)

    def _draw(self, data: dict[str, Any]) -> None:
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        done = self.done_bytes
        rate = done / elapsed
        if self.total:
            frac = min(done / self.total, 1.0)
            filled = int(frac * self.WIDTH)
            bar = "[" + "#" * filled + "-" * (self.WIDTH - filled) + "]"
            eta = (self.total - done) / rate if rate > 0 else 0.0
            text = (
                f"{bar} layers {self.done_layers}/{self.layers}  {done / MIB:.1f}/"
                f"{self.total / MIB:.1f} MiB  {rate / MIB:.1f} MiB/s  ETA {eta:.0f}s"
            )
        else:
            text = f"{data.get('files', 0)} files  {data.get('bytes', 0) / MIB:.1f} MiB"
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self.drawn = True

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.drawn = False

    def clear(self) -> None:
        with self.lock:
            self._clear()

    def close(self) -> None:
        global _active
        self.clear()
        if _active is self:
            _active = None


def make_reporter(mode: str, stream: IO[str] | None = None) -> Reporter | None:
    """mode: auto (bar on a TTY, else nothing), tty, json or none."""
    stream = stream or sys.stderr
    if mode == "json":
        return JsonEvents(stream)
    if mode == "tty" or (mode == "auto" and stream.isatty()):
        return TtyBar(stream)
    return None
