"""Run an unmodified asyncio program with rustasync serving its primitives.

This is what `python -m rustasync run` does; `run_path` and `run_module` are
the same thing as library calls. The program runs in this interpreter as
`__main__`, with the `sys.argv`, `sys.path[0]` and `__main__` module that
`python SCRIPT.py` or `python -m MODULE` would give it, while `install()` is
in effect.

The loop is chosen without event loop policies (deprecated from Python
3.14): `asyncio.new_event_loop` is served by the chosen loop's factory, which
is what `asyncio.run()` and an `asyncio.Runner` without a `loop_factory`
call for their loop.

From the command line, nothing is undone when the program's main body
returns: rustasync stays installed (and the chosen loop in place) through
the interpreter's own shutdown, so threads still running and `atexit`
handlers see what the main body saw. The library calls restore everything
when they return.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import importlib
import importlib.machinery
import importlib.util
import io
import marshal
import os
import pkgutil
import runpy
import sys
import types
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from ._install import install, uninstall
from ._virtual import VirtualTimeLoop

__all__ = ["LOOPS", "run", "run_module", "run_path"]

_T = TypeVar("_T")

LOOPS = ("asyncio", "uvloop", "rloop")


def _loop_factory(loop: str, virtual_time: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop not in LOOPS:
        raise ValueError(f"unknown loop {loop!r}; expected one of {', '.join(LOOPS)}")
    if virtual_time:
        if loop != "asyncio":
            raise ValueError(f"virtual time needs the asyncio loop; it cannot drive {loop}'s clock")
        return VirtualTimeLoop
    if loop != "asyncio":
        # uvloop and rloop each have a module-level new_event_loop().
        factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(
            loop
        ).new_event_loop
        return factory
    return None


def _serve_new_event_loop(
    undo: contextlib.ExitStack, factory: Callable[[], asyncio.AbstractEventLoop], created: list[Any]
) -> None:
    """Serve `asyncio.new_event_loop` (and `asyncio.events.new_event_loop`,
    which `asyncio.run()` and `asyncio.Runner()` call when given no
    `loop_factory`) from `factory`; register their restoring."""

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = factory()
        created.append(loop)
        return loop

    new_event_loop.__doc__ = asyncio.events.new_event_loop.__doc__
    for module in (asyncio, asyncio.events):
        undo.callback(setattr, module, "new_event_loop", module.new_event_loop)
        module.new_event_loop = new_event_loop  # type: ignore[attr-defined]


# The setup below registers its undoing on an ExitStack as plain callbacks (no
# generator-based context managers): the command line never closes that stack,
# and a generator left suspended would undo its work when it is collected.


def _set_environment(
    undo: contextlib.ExitStack, loop: str, virtual_time: bool, stock: bool
) -> list[Any]:
    """Set up the loop factory and the replacements; register their undoing."""
    factory = _loop_factory(loop, virtual_time)
    created: list[Any] = []
    if factory is not None:
        _serve_new_event_loop(undo, factory, created)
    if not stock:
        install()
        undo.callback(uninstall)
    return created


@dataclass(frozen=True)
class _Program:
    """What `python TARGET ARGS...` would run, and how it would set up for it."""

    argv0: str
    # The entry `python` would put at the front of sys.path (None under -P,
    # except for a directory or archive).
    path0: str | None
    execute: Callable[[types.ModuleType], Any]


def _absolute(path: str) -> str:
    """The path as `python` makes a script's path absolute: joined, not normalised."""
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _script_program(path: str) -> _Program:
    """`python PATH`: a script, or a directory or zip archive with a `__main__.py`."""
    filename = _absolute(path)
    if not os.path.exists(filename):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", filename)
    if pkgutil.get_importer(filename) is not None:
        # As python does: the archive or directory goes first on sys.path
        # (even under -P), and its __main__ module runs as if by -m.
        def execute_main_module(main: types.ModuleType) -> None:
            runpy._run_module_as_main("__main__", False)  # type: ignore[attr-defined]

        return _Program(path, filename, execute_main_module)
    code, loader = _compile_script(filename)

    def execute(main: types.ModuleType) -> None:
        main.__dict__.update(__file__=filename, __cached__=None, __loader__=loader)
        exec(code, main.__dict__)

    path0 = None if sys.flags.safe_path else os.path.dirname(os.path.realpath(filename))
    return _Program(path, path0, execute)


def _compile_script(filename: str) -> tuple[types.CodeType, Any]:
    with io.open_code(filename) as f:
        data = f.read()
    if filename.endswith(".pyc"):
        return marshal.loads(data[16:]), importlib.machinery.SourcelessFileLoader(
            "__main__", filename
        )
    code = compile(data, filename, "exec", dont_inherit=True)
    return code, importlib.machinery.SourceFileLoader("__main__", filename)


def _module_program(name: str, *, check: bool = True) -> _Program:
    """`python -m NAME`: sys.argv[0] is "-m" until the module is found, then its path.

    With `check`, a module that cannot be run raises ModuleNotFoundError;
    without, python's own lookup reports it (SystemExit with its message).
    """

    def execute(main: types.ModuleType) -> None:
        # Looking the module up imports its parent packages: after install(),
        # with sys.path and sys.argv set, as python does.
        if check:
            _check_runnable_module(name)
        runpy._run_module_as_main(name, True)  # type: ignore[attr-defined]

    return _Program("-m", None if sys.flags.safe_path else os.getcwd(), execute)


def _new_main_module() -> types.ModuleType:
    """A `__main__` module as the interpreter makes one before running a program."""
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __annotations__={},
        __builtins__=builtins,
        __loader__=importlib.machinery.BuiltinImporter,
    )
    return main


def _set_main(undo: contextlib.ExitStack, program: _Program, args: Sequence[str]) -> None:
    """Give the program its sys.argv, sys.path[0] and `__main__`; register their undoing."""
    saved_argv = sys.argv[:]
    undo.callback(sys.argv.__setitem__, slice(None), saved_argv)
    sys.argv[:] = [program.argv0, *args]

    saved_path = sys.path[:]
    undo.callback(sys.path.__setitem__, slice(None), saved_path)
    if program.path0 is not None:
        # This interpreter was started with an entry of its own in front
        # (`python -m rustasync` puts the current directory there), unless -P
        # kept it out; a directory or archive always goes in front.
        if sys.path and not sys.flags.safe_path:
            sys.path[0] = program.path0
        else:
            sys.path.insert(0, program.path0)

    saved_main = sys.modules.get("__main__")
    if saved_main is not None:
        undo.callback(sys.modules.__setitem__, "__main__", saved_main)
    sys.modules["__main__"] = _new_main_module()


def _run_program(
    program: _Program,
    args: Sequence[str],
    loop: str,
    virtual_time: bool,
    stock: bool,
    undo: contextlib.ExitStack,
) -> list[Any]:
    created = _set_environment(undo, loop, virtual_time, stock)
    _set_main(undo, program, args)
    program.execute(sys.modules["__main__"])
    return created


def run_path(
    path: str | os.PathLike[str],
    args: Sequence[str] = (),
    *,
    loop: str = "asyncio",
    virtual_time: bool = False,
    stock: bool = False,
) -> list[Any]:
    """Run the script at `path` as `__main__` with rustasync installed.

    Like `python path args...`: `sys.argv` is `[path, *args]` with `path` as
    given, `sys.path[0]` is the script's real directory, and `__main__` is a
    new module whose `__file__` is the script's absolute path (a directory
    or zip archive runs its `__main__.py`, as with `python`). Everything is
    restored when it returns. Exceptions raised by the script, `SystemExit`
    included, propagate.

    Args:
        loop: "asyncio" (asyncio's own loop, untouched), "uvloop" or "rloop":
            the loop `asyncio.new_event_loop()` makes, and so the loop of
            `asyncio.run()` and of an `asyncio.Runner` without a factory.
        virtual_time: run every event loop the program creates on a
            `VirtualTimeLoop`.
        stock: leave asyncio's own primitives in place (to compare).

    Returns:
        The event loops the program created, when the runner chose the loop
        (`virtual_time`, or `loop` other than "asyncio"); otherwise an empty
        list. On a
        `VirtualTimeLoop`, `loop.time()` tells the virtual time it ran for.

    Raises:
        FileNotFoundError: if there is no such file or directory.
    """
    program = _script_program(os.fspath(path))
    with contextlib.ExitStack() as undo:
        return _run_program(program, args, loop, virtual_time, stock, undo)


def run_module(
    name: str,
    args: Sequence[str] = (),
    *,
    loop: str = "asyncio",
    virtual_time: bool = False,
    stock: bool = False,
) -> list[Any]:
    """Run module `name` as `__main__` with rustasync installed.

    Like `python -m name args...` (a package runs its `__main__`):
    `sys.argv[0]` is the module's path, `sys.path[0]` the current
    directory, `__main__.__spec__` the module's spec. Same options and
    return value as `run_path`.

    Raises:
        ModuleNotFoundError: if the module (or a package's `__main__`) cannot
            be found; nothing has run then.
    """
    program = _module_program(name)
    with contextlib.ExitStack() as undo:
        return _run_program(program, args, loop, virtual_time, stock, undo)


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


def _without_runner_frames(exc: BaseException, tb: TracebackType | None) -> TracebackType | None:
    """Drop the leading frames that belong to the runner, not the program.

    A syntax error in the program has only the runner's frames: python
    reports it without a traceback.
    """
    first = tb
    while first is not None and _is_runner_frame(first):
        first = first.tb_next
    if first is None and not isinstance(exc, SyntaxError):
        return tb
    return first


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
        tb = _without_runner_frames(value, tb)
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

    Nothing is undone afterwards: rustasync stays installed, the chosen loop
    in place and the program's `__main__`, `sys.argv` and `sys.path` as they
    are, through the interpreter's shutdown (joining non-daemon threads,
    `atexit` handlers), as for `python SCRIPT.py`.

    Errors that stop the program from starting are reported as Python reports
    them (exit status 2 for a missing script, 1 and python's message for a
    module that cannot be run, a syntax error without a traceback). An
    exception raised by the program, `SystemExit` included, propagates.
    """
    try:
        program = _module_program(target, check=False) if module else _script_program(target)
    except FileNotFoundError as exc:
        print(
            f"{sys.executable}: can't open file {exc.filename!r}: [Errno 2] {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    except SyntaxError:
        _report_program_frames_only()
        raise
    # Never closed, on purpose (see the module docstring).
    undo = contextlib.ExitStack()
    try:
        _run_program(program, args, loop, virtual_time, stock, undo)
    except SystemExit:
        raise
    except BaseException:
        _report_program_frames_only()
        raise
    return 0


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    virtual_time: bool = False,
) -> _T:
    """Run coroutine `main` in a new event loop and return its result.

    Like `asyncio.run`; differences: `virtual_time=True` runs it on a
    `VirtualTimeLoop`, whose clock skips the waits that only the next timer
    can end, keeping real time's order of events. It does not install
    rustasync into asyncio.

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
