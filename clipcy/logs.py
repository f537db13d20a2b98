"""Logging: CLIP_LOG_LEVEL (debug, info, warn, error) and -v/-q; a flag beats the variable.

The logging module (with traceback, string, textwrap, tokenize) is a tenth of a local
`clipctl cat`'s start-up, and such a run logs nothing at the default level. So the command
line's own messages go through `log` below, which imports logging only for a message at an
enabled level, and setup_logging configures the "clipcy" logger the moment logging is
imported (by `log`, or by a module that logs, such as the remote stores).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

# logging's levels, known here without importing it
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

_LEVELS = {
    "debug": DEBUG,
    "info": INFO,
    "warn": WARNING,
    "warning": WARNING,
    "error": ERROR,
}

_level = WARNING  # the "clipcy" logger's level, as setup_logging set it


def level_from_env() -> int:
    return _LEVELS.get(os.environ.get("CLIP_LOG_LEVEL", "").strip().lower(), WARNING)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    global _level
    if quiet:
        level = ERROR
    elif verbose >= 2:
        level = DEBUG
    elif verbose == 1:
        level = INFO
    else:
        level = level_from_env()
    _level = level
    if "logging" in sys.modules:
        _configure()
    elif not any(isinstance(f, _ConfigureOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _ConfigureOnImport())


def _configure() -> None:
    import logging

    class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
        """Erases a progress bar before writing, so a log line never lands inside it."""

        def emit(self, record: logging.LogRecord) -> None:
            from clipcy.progress import clear_active

            clear_active()
            super().emit(record)

    handler = _Handler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    log = logging.getLogger("clipcy")
    log.handlers[:] = [handler]
    log.setLevel(_level)
    log.propagate = False


class _ConfigureOnImport:
    """A meta path finder that lets the logging module load as usual, then configures the
    "clipcy" logger as setup_logging asked (once: it takes itself off sys.meta_path)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != "logging":
            return None
        from clipcy._select import find_spec

        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = find_spec(name, path)  # as the finders after this one would find it
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ThenConfigure(spec.loader)  # type: ignore[assignment]
        return spec


class _ThenConfigure:
    """The logging module's own loader, followed by _configure."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        _configure()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Log:
    """The "clipcy" logger's debug, info, warning, error and isEnabledFor, importing logging
    only for a message at an enabled level."""

    def isEnabledFor(self, level: int) -> bool:
        if "logging" in sys.modules:
            return bool(sys.modules["logging"].getLogger("clipcy").isEnabledFor(level))
        return level >= _level

    def _log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            import logging

            logging.getLogger("clipcy").log(level, msg, *args, stacklevel=3, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(INFO, msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(ERROR, msg, *args, **kwargs)


log = _Log()


def step(what: str) -> _Step:
    """Log `what` at debug level with the time it took: `with step("write archive"): ...`."""
    return _Step(what)


class _Step:
    """step()'s context manager (a class: contextlib costs a start-up ~0.5 ms)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()
        log.debug("%s ...", self.what)

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:  # (an error ends the step unlogged, as it ends the work)
            log.debug("%s done in %.3f s", self.what, time.perf_counter() - self.t0)
