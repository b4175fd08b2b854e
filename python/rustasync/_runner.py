"""Run an unmodified asyncio program with rustasync serving its primitives.

This is what `python -m rustasync run` does; `run_path` and `run_module` are
the same thing as library calls. The program runs in this interpreter as
`__main__`, with its own `sys.argv`, as `python SCRIPT.py` or
`python -m MODULE` would run it, while `install()` is in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import runpy
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from ._install import installed
from ._virtual import VirtualTimeLoop

__all__ = ["LOOPS", "run", "run_module", "run_path"]

_T = TypeVar("_T")

LOOPS = ("asyncio", "uvloop")


def _loop_factory(loop: str, virtual_time: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop not in LOOPS:
        raise ValueError(f"unknown loop {loop!r}; expected one of {', '.join(LOOPS)}")
    if virtual_time:
        if loop != "asyncio":
            raise ValueError("virtual time needs the asyncio loop; it cannot drive uvloop's clock")
        return VirtualTimeLoop
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


class _Policy(asyncio.DefaultEventLoopPolicy):  # type: ignore[misc,valid-type]
    """The platform's default policy, with loops made by a given factory."""

    def __init__(
        self, factory: Callable[[], asyncio.AbstractEventLoop], created: list[Any]
    ) -> None:
        super().__init__()
        self._factory = factory
        self._created = created

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._factory()
        self._created.append(loop)
        return loop


@contextlib.contextmanager
def _environment(loop: str, virtual_time: bool, stock: bool) -> Iterator[list[Any]]:
    """Set up the loop policy and the replacements; undo both afterwards."""
    factory = _loop_factory(loop, virtual_time)
    created: list[Any] = []
    with contextlib.ExitStack() as stack:
        if factory is not None:
            previous = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(_Policy(factory, created))
            stack.callback(asyncio.set_event_loop_policy, previous)
        if not stock:
            stack.enter_context(installed())
        yield created


@contextlib.contextmanager
def _as_main(argv: list[str], path0: str) -> Iterator[None]:
    """Give the program its own sys.argv and sys.path[0] while it runs."""
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv[:] = argv
    if sys.path:
        sys.path[0] = path0
    else:
        sys.path.insert(0, path0)
    try:
        yield
    finally:
        sys.argv[:] = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0


def run_path(
    path: str | os.PathLike[str],
    args: Sequence[str] = (),
    *,
    loop: str = "asyncio",
    virtual_time: bool = False,
    stock: bool = False,
) -> list[Any]:
    """Run the script at `path` as `__main__` with rustasync installed.

    Like `python path args...`: `sys.argv` is `[path, *args]`, `sys.path[0]`
    is the script's directory and `__file__` its absolute path. Exceptions
    raised by the script, `SystemExit` included, propagate.

    Args:
        loop: "asyncio" (the default policy, untouched) or "uvloop".
        virtual_time: run every event loop the program creates on a
            `VirtualTimeLoop`.
        stock: leave asyncio's own primitives in place (to compare).

    Returns:
        The event loops the program created, when the runner chose the loop
        (`virtual_time` or `loop="uvloop"`); otherwise an empty list. On a
        `VirtualTimeLoop`, `loop.time()` tells the virtual time it ran for.

    Raises:
        FileNotFoundError: if there is no such file or directory.
    """
    path = os.fspath(path)
    full = os.path.abspath(path)
    if not os.path.exists(full):
        raise FileNotFoundError(2, "No such file or directory", full)
    script_dir = full if os.path.isdir(full) else os.path.dirname(full)
    with _environment(loop, virtual_time, stock) as created, _as_main([path, *args], script_dir):
        runpy.run_path(full, run_name="__main__")
    return created


def run_module(
    name: str,
    args: Sequence[str] = (),
    *,
    loop: str = "asyncio",
    virtual_time: bool = False,
    stock: bool = False,
) -> list[Any]:
    """Run module `name` as `__main__` with rustasync installed.

    Like `python -m name args...` (a package runs its `__main__`), with the
    same options and return value as `run_path`.

    Raises:
        ModuleNotFoundError: if the module (or a package's `__main__`) cannot
            be found; nothing has run then.
    """
    _check_runnable_module(name)
    with _environment(loop, virtual_time, stock) as created, _as_main([name, *args], os.getcwd()):
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    return created


def _check_runnable_module(name: str) -> None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name}", name=name)
    if spec.submodule_search_locations is not None:
        main = f"{name}.__main__"
        try:
            main_spec = importlib.util.find_spec(main)
        except ImportError:
            main_spec = None
        if main_spec is None:
            raise ModuleNotFoundError(
                f"No module named {main}; {name!r} is a package and cannot be directly executed",
                name=main,
            )


# -- command line ---------------------------------------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))


def _is_runner_frame(tb: TracebackType) -> bool:
    filename = tb.tb_frame.f_code.co_filename
    return (
        filename.startswith("<frozen runpy")
        or filename == runpy.__file__
        or os.path.dirname(os.path.abspath(filename)) == _HERE
    )


def _without_runner_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop the leading frames that belong to the runner, not the program."""
    first = tb
    while first is not None and _is_runner_frame(first):
        first = first.tb_next
    return first if first is not None else tb


def _report_program_frames_only() -> None:
    """Make the interpreter's report of an uncaught exception start at the program.

    The exception itself propagates, so that Python prints it through
    `sys.excepthook` (the program's own, if it set one), runs its exit
    handlers and sets the exit status exactly as for `python SCRIPT.py`.
    """
    hook = sys.excepthook

    def excepthook(
        exc_type: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        sys.excepthook = hook
        tb = _without_runner_frames(tb)
        hook(exc_type, value.with_traceback(tb), tb)

    sys.excepthook = excepthook


def main(
    target: str,
    args: Sequence[str],
    *,
    module: bool = False,
    loop: str = "asyncio",
    virtual_time: bool = False,
    stock: bool = False,
) -> int:
    """`python -m rustasync run`: the exit status when the program returns.

    Errors that stop the program from starting are reported as Python reports
    them (exit status 2 for a missing script, 1 for a missing module). An
    exception raised by the program, `SystemExit` included, propagates.
    """
    runner = run_module if module else run_path
    try:
        runner(target, args, loop=loop, virtual_time=virtual_time, stock=stock)
    except FileNotFoundError as exc:
        if not _raised_in(exc, run_path):
            _report_program_frames_only()
            raise
        print(
            f"{sys.executable}: can't open file {exc.filename!r}: [Errno 2] {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    except ModuleNotFoundError as exc:
        if not _raised_in(exc, _check_runnable_module):
            _report_program_frames_only()
            raise
        print(f"{sys.executable}: {exc}", file=sys.stderr)
        return 1
    except SystemExit:
        raise
    except BaseException:
        _report_program_frames_only()
        raise
    return 0


def _raised_in(exc: BaseException, function: Callable[..., Any]) -> bool:
    """Whether `exc` was raised by `function` itself (its innermost frame)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code is function.__code__


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    virtual_time: bool = False,
) -> _T:
    """Run coroutine `main` in a new event loop and return its result.

    Like `asyncio.run`; differences: `virtual_time=True` runs it on a
    `VirtualTimeLoop`, whose clock jumps to the next timer whenever the loop
    would wait. It does not install rustasync into asyncio.

    Raises:
        ValueError: if both `virtual_time` and `loop_factory` are given.
        RuntimeError: if called while an event loop is running in this thread.
    """
    if virtual_time:
        if loop_factory is not None:
            raise ValueError("give either virtual_time=True or a loop_factory, not both")
        loop_factory = VirtualTimeLoop
    with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
        return runner.run(main)
