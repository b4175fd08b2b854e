"""install()/uninstall(), `python -m rustasync run`, and rustasync under asyncio's runners."""

from __future__ import annotations

import asyncio
import asyncio.queues
import asyncio.tasks
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import anyio
import pytest
from _loops import LOOP_KINDS
from _programs import python

import rustasync
from rustasync import __main__ as cli
from rustasync import _install

REPLACED = {
    "sleep": asyncio.tasks,
    "gather": asyncio.tasks,
    "Queue": asyncio.queues,
    "LifoQueue": asyncio.queues,
    "PriorityQueue": asyncio.queues,
}


def bindings() -> dict[tuple[str, str], object]:
    """Every binding install() may change, by (module, name)."""
    found = {}
    for name, home in {**REPLACED, "QueueShutDown": asyncio.queues}.items():
        for module in (asyncio, home):
            found[(module.__name__, name)] = module.__dict__.get(name, "<absent>")
    return found


@pytest.fixture
def stand_ins(monkeypatch):
    """Distinct objects to install, so the mechanics can be tested on any build."""
    table = {name: type(name, (), {}) for name in REPLACED}
    monkeypatch.setattr(_install, "_replacements", lambda: dict(table))
    return table


@pytest.fixture(autouse=True)
def asyncio_is_restored():
    before = bindings()
    yield
    assert not _install.is_installed()
    assert bindings() == before
    for key, obj in before.items():
        module, name = key
        assert sys.modules[module].__dict__.get(name, "<absent>") is obj


# -- install / uninstall -------------------------------------------------------------------------


def test_install_rebinds_asyncio_and_its_submodules(stand_ins) -> None:
    original = {name: getattr(asyncio, name) for name in REPLACED}
    rustasync.install()
    try:
        for name, home in REPLACED.items():
            assert getattr(asyncio, name) is stand_ins[name]
            assert getattr(home, name) is stand_ins[name]
        from asyncio import Queue, sleep

        assert sleep is stand_ins["sleep"]
        assert Queue is stand_ins["Queue"]
    finally:
        rustasync.uninstall()
    for name, home in REPLACED.items():
        assert getattr(asyncio, name) is original[name]
        assert getattr(home, name) is original[name]


def test_installs_nest(stand_ins) -> None:
    original = asyncio.sleep
    rustasync.install()
    rustasync.install()
    rustasync.uninstall()
    assert asyncio.sleep is stand_ins["sleep"]
    rustasync.uninstall()
    assert asyncio.sleep is original


def test_uninstall_without_install_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not installed"):
        rustasync.uninstall()


def test_uninstall_restores_what_was_there_even_if_rebound_meanwhile(stand_ins) -> None:
    original = asyncio.gather
    rustasync.install()
    asyncio.gather = asyncio.tasks.gather = object()
    rustasync.uninstall()
    assert asyncio.gather is original
    assert asyncio.tasks.gather is original


def test_context_manager_restores_on_error(stand_ins) -> None:
    with pytest.raises(ZeroDivisionError):
        with rustasync.installed():
            assert asyncio.Queue is stand_ins["Queue"]
            with rustasync.installed():
                assert asyncio.Queue is stand_ins["Queue"]
            assert asyncio.Queue is stand_ins["Queue"]
            1 / 0  # noqa: B018


def test_failed_install_leaves_asyncio_alone(monkeypatch) -> None:
    def broken():
        raise ImportError("no primitives in this build")

    monkeypatch.setattr(_install, "_replacements", broken)
    with pytest.raises(ImportError):
        rustasync.install()
    assert not _install.is_installed()


def test_queue_shutdown_is_never_added_where_asyncio_has_none(stand_ins) -> None:
    had = hasattr(asyncio, "QueueShutDown")
    with rustasync.installed():
        assert hasattr(asyncio, "QueueShutDown") == had
        assert hasattr(asyncio.queues, "QueueShutDown") == had


def test_absent_binding_is_removed_again(monkeypatch) -> None:
    # Where a name did not exist before install() (QueueShutDown before 3.13,
    # were it ever swapped there), uninstall() removes it rather than leaving a stand-in.
    monkeypatch.delattr(asyncio.queues, "QueueShutDown", raising=False)
    monkeypatch.delattr(asyncio, "QueueShutDown", raising=False)
    monkeypatch.setattr(_install, "_replacements", lambda: {"QueueShutDown": type("Q", (), {})})
    with rustasync.installed():
        assert hasattr(asyncio, "QueueShutDown")
    assert not hasattr(asyncio, "QueueShutDown")
    assert not hasattr(asyncio.queues, "QueueShutDown")


# -- with the real primitives ------------------------------------------------------------------


def test_install_serves_rustasync_primitives() -> None:
    with rustasync.installed():
        assert asyncio.sleep is rustasync.sleep
        assert asyncio.gather is rustasync.gather
        # The served queue classes are rustasync's, made subclassable the
        # way asyncio's are (tests/test_install_queues.py).
        for name in ("Queue", "LifoQueue", "PriorityQueue"):
            served = getattr(asyncio, name)
            assert served.__bases__ == (getattr(rustasync, name),)
            assert getattr(asyncio.queues, name) is served

        async def main():
            q = asyncio.Queue()
            await q.put(1)
            got = await asyncio.gather(q.get(), asyncio.sleep(0, "slept"))
            return type(q), got

        kind, got = asyncio.run(main())
        assert kind is asyncio.Queue
        assert issubclass(kind, rustasync.Queue)
        assert got == [1, "slept"]


def test_queue_shutdown_is_caught_by_asyncio_name() -> None:
    with rustasync.installed():
        if not hasattr(asyncio, "QueueShutDown"):
            pytest.skip("asyncio has no QueueShutDown before Python 3.13")

        async def main():
            q = asyncio.Queue()
            q.shutdown()
            with pytest.raises(asyncio.QueueShutDown):
                await q.put(1)

        asyncio.run(main())


# -- python -m rustasync run ------------------------------------------------------------------


def script(tmp_path: Path, source: str, name: str = "prog.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# Prints what a program can see of how it was started.
PROBE = """
\"\"\"The program's docstring.\"\"\"
import sys
import __main__

spec = __main__.__spec__
loader = __main__.__dict__.get("__loader__")
print("argv", sys.argv)
print("file", __main__.__dict__.get("__file__", "<unset>"))
print("spec", None if spec is None else (spec.name, spec.origin, spec.parent, spec.cached))
print("package", repr(__package__), "cached", repr(__main__.__dict__.get("__cached__", "<unset>")))
print("loader", type(loader).__name__, getattr(loader, "name", None), getattr(loader, "path", None))
print("names", sorted(vars(__main__)))
print("builtins", type(__builtins__).__name__)
print("path0", sys.path[0])
print("main", __name__, sys.modules["__main__"] is __main__)
print("code", sys._getframe().f_code.co_filename)
print("doc", __doc__)
"""


@pytest.fixture
def probes(tmp_path: Path) -> Path:
    """The probe as scripts, modules, a package, a directory and a zip archive."""
    for name in ("prog.py", "sub/prog.py", "mod.py", "pkg/__main__.py", "pkg/sub.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(PROBE)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "link.py").symlink_to(tmp_path / "sub" / "prog.py")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text(PROBE)
    with zipfile.ZipFile(tmp_path / "app.zip", "w") as archive:
        archive.writestr("__main__.py", PROBE)
    return tmp_path


@pytest.mark.parametrize(
    "command",
    [
        ["prog.py", "a", "-p", "2", "--", "-h"],
        ["./sub/prog.py"],
        ["link.py"],
        ["{dir}/prog.py", "a"],
        ["-m", "mod", "a", "-m"],
        ["-m", "pkg"],
        ["-m", "pkg.sub", "b"],
        ["app", "c"],
        ["./app"],
        ["app.zip"],
        ["-P", "prog.py"],
        ["-P", "-m", "pkg.sub"],
        ["-P", "app"],
    ],
    ids=" ".join,
)
def test_run_gives_the_program_what_python_gives_it(probes, command) -> None:
    """sys.argv (as typed), __main__ (__file__, __spec__, __loader__, ...) and sys.path[0]."""
    command = [part.format(dir=probes) for part in command]
    flags = command[:1] if command[0] == "-P" else []
    target = command[len(flags) :]
    theirs = python(*flags, *target, cwd=probes, timeout=60)
    ours = python(*flags, "-m", "rustasync", "run", *target, cwd=probes, timeout=60)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    assert ours.lines == theirs.lines


# Uses asyncio.Queue and asyncio.gather from the main body, from a thread that
# runs on after the main body (and the runner) have returned, and from an
# atexit handler; reports whose they were and what sys.argv and __main__ were.
AFTER_THE_MAIN_BODY = """
import asyncio, atexit, sys, threading, time
import __main__

def report(when):
    async def use():
        q = asyncio.Queue()
        await q.put(1)
        got = await asyncio.gather(q.get(), asyncio.sleep(0, "slept"))
        return type(q).__module__.split(".")[0], asyncio.gather.__module__.split(".")[0], got
    here = sys.modules["__main__"] is __main__
    print(when, asyncio.run(use()), sys.argv, here, sys.path[0] == SYS_PATH0, flush=True)

def worker():
    # The interpreter marks the main thread finished when it begins to shut
    # down: after the main body, before joining this thread.
    while threading.main_thread().is_alive():
        time.sleep(0.01)
    report("thread")

SYS_PATH0 = sys.path[0]
atexit.register(report, "atexit")
threading.Thread(target=worker).start()
report("main")
"""


def test_run_keeps_rustasync_until_the_interpreter_shuts_down(tmp_path) -> None:
    """Threads that outlive the main body and atexit handlers see what it saw."""
    prog = script(tmp_path, AFTER_THE_MAIN_BODY)
    stock = python(str(prog), "x", timeout=60)
    assert stock.returncode == 0, stock.stderr
    tail = f"('asyncio', 'asyncio', [1, 'slept']) [{str(prog)!r}, 'x'] True True"
    assert stock.lines == [f"main {tail}", f"thread {tail}", f"atexit {tail}"]

    compare = python("-m", "rustasync", "run", "--stock", str(prog), "x", timeout=60)
    assert (compare.returncode, compare.lines, compare.stderr) == (0, stock.lines, "")

    ours = python("-m", "rustasync", "run", str(prog), "x", timeout=60)
    assert ours.returncode == 0, ours.stderr
    tail = tail.replace("'asyncio', 'asyncio'", "'rustasync', 'rustasync'")
    assert ours.lines == [f"main {tail}", f"thread {tail}", f"atexit {tail}"]


def test_run_reports_a_syntax_error_like_python(tmp_path) -> None:
    prog = script(tmp_path, "print('never')\nx = (\n")
    ours = python("-m", "rustasync", "run", "prog.py", cwd=tmp_path, timeout=60)
    theirs = python("prog.py", cwd=tmp_path, timeout=60)
    assert theirs.returncode == 1
    assert (ours.returncode, ours.lines, ours.stderr) == (1, [], theirs.stderr)
    assert str(prog) in ours.stderr


def test_run_path_restores_argv_path_and_main(tmp_path, monkeypatch) -> None:
    from rustasync import _runner

    script(
        tmp_path,
        """
        import sys
        assert sys.argv == ["prog.py", "a"], sys.argv
        sys.argv.append("more")
        sys.path.insert(0, "elsewhere")
        """,
    )
    monkeypatch.chdir(tmp_path)
    argv, path, main = sys.argv[:], sys.path[:], sys.modules["__main__"]
    _runner.run_path("prog.py", ["a"])
    assert sys.argv == argv
    assert sys.path == path
    assert sys.modules["__main__"] is main


def test_run_serves_rustasync_to_the_script(tmp_path) -> None:
    prog = script(
        tmp_path,
        """
        import asyncio
        import asyncio.tasks
        from asyncio import Queue, sleep
        import rustasync

        async def main():
            print(asyncio.sleep is rustasync.sleep, sleep is rustasync.sleep)
            print(asyncio.tasks.gather is rustasync.gather)
            q = Queue()
            print(isinstance(q, rustasync.Queue), isinstance(q, asyncio.queues.Queue))
            await q.put(await asyncio.gather(sleep(0.01, "a"), sleep(0, "b")))
            print(await q.get())

        asyncio.run(main())
        """,
    )
    out = python("-m", "rustasync", "run", str(prog), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.lines == ["True True", "True", "True True", "['a', 'b']"]


@pytest.mark.parametrize("loop", [k for k in LOOP_KINDS if k != "asyncio"])
def test_run_on_another_loop(tmp_path, loop) -> None:
    """asyncio.run(), asyncio.Runner() and asyncio.new_event_loop() make the
    chosen loop, with asyncio's default policy left alone (policies are
    deprecated from 3.14: -W error would turn a use into an error)."""
    prog = script(
        tmp_path,
        """
        import asyncio, sys

        def kind():
            return type(asyncio.get_running_loop()).__module__.split(".")[0]

        async def main():
            await asyncio.sleep(0.01)
            return kind()

        print(asyncio.run(main()))
        with asyncio.Runner() as runner:
            print(runner.run(main()))
        loop = asyncio.new_event_loop()
        print(loop.run_until_complete(main()))
        loop.close()
        if sys.version_info < (3, 14):
            print(type(asyncio.get_event_loop_policy()).__module__)
        else:
            print("asyncio.unix_events")
        """,
    )
    out = python("-W", "error", "-m", "rustasync", "run", "--loop", loop, str(prog), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.lines == [loop, loop, loop, "asyncio.unix_events"]


def test_run_path_restores_new_event_loop(tmp_path) -> None:
    from rustasync import _runner

    before = asyncio.new_event_loop, asyncio.events.new_event_loop
    loops = _runner.run_path(
        script(tmp_path, "import asyncio\nasyncio.run(asyncio.sleep(0))\n"), virtual_time=True
    )
    assert [type(lp) for lp in loops] == [rustasync.VirtualTimeLoop]
    assert (asyncio.new_event_loop, asyncio.events.new_event_loop) == before


def test_run_module(tmp_path) -> None:
    script(tmp_path, "import sys\nprint(__name__, sys.argv[1:])\n", "tutorial_mod.py")
    out = python("-m", "rustasync", "run", "--stock", "-m", "tutorial_mod", "-c", "5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.lines == ["__main__ ['-c', '5']"]


def test_run_missing_module_is_like_python(tmp_path) -> None:
    out = python("-m", "rustasync", "run", "-m", "no_such_module_here", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().endswith("No module named no_such_module_here")


def test_run_missing_script_is_like_python(tmp_path) -> None:
    missing = tmp_path / "missing.py"
    ours = python("-m", "rustasync", "run", str(missing))
    theirs = python(str(missing))
    assert ours.returncode == theirs.returncode == 2
    assert ours.stderr == theirs.stderr


def test_run_raising_script_shows_only_its_own_frames(tmp_path) -> None:
    prog = script(
        tmp_path,
        """
        import asyncio

        async def boom():
            await asyncio.sleep(0)
            raise ValueError("boom")

        print("before")
        asyncio.run(boom())
        """,
    )
    ours = python("-m", "rustasync", "run", "--stock", str(prog), timeout=60)
    theirs = python(str(prog), timeout=60)
    assert ours.returncode == theirs.returncode == 1
    assert ours.lines == ["before"]
    assert ours.stderr == theirs.stderr
    assert ours.stderr.splitlines()[1] == f'  File "{prog}", line 9, in <module>'
    assert "rustasync" not in ours.stderr and "runpy" not in ours.stderr


def test_run_raising_script_with_rustasync(tmp_path) -> None:
    prog = script(
        tmp_path,
        """
        import asyncio

        async def main():
            await asyncio.sleep(0.001)
            1 / 0

        asyncio.run(main())
        """,
    )
    out = python("-m", "rustasync", "run", str(prog), timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith(f'Traceback (most recent call last):\n  File "{prog}", line 8')
    assert out.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [("3", 3, ""), ("0", 0, ""), ("None", 0, ""), ("'bye'", 1, "bye\n")],
)
def test_run_system_exit_is_like_python(tmp_path, code, status, stderr) -> None:
    prog = script(tmp_path, f"raise SystemExit({code})\n")
    out = python("-m", "rustasync", "run", "--stock", str(prog), timeout=60)
    assert (out.returncode, out.stderr) == (status, stderr)


def test_run_system_exit_with_rustasync_installed(tmp_path) -> None:
    prog = script(tmp_path, "import asyncio\nasyncio.run(asyncio.sleep(0))\nraise SystemExit(3)\n")
    out = python("-m", "rustasync", "run", str(prog), timeout=60)
    assert (out.returncode, out.stderr) == (3, "")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "--loop", "trio", "x.py"],
        ["run", "--virtual-time", "--loop", "uvloop", "x.py"],
        ["run", "--virtual-time", "--loop", "rloop", "x.py"],
        ["frobnicate"],
    ],
)
def test_cli_misuse_prints_usage_and_exits_2(argv) -> None:
    out = python("-m", "rustasync", *argv, timeout=60)
    assert out.returncode == 2
    assert "usage:" in out.stderr


def test_run_restores_asyncio_after_the_script(tmp_path, stand_ins) -> None:
    from rustasync import _runner

    prog = script(tmp_path, "import asyncio, sys\nsys.stdout.write(asyncio.sleep.__name__)\n")
    with pytest.raises(SystemExit):
        _runner.run_path(script(tmp_path, "raise SystemExit(4)\n", "exits.py"))
    _runner.run_path(prog)
    assert not _install.is_installed()


@pytest.mark.parametrize("command", ["bench", "stress"])
def test_bench_and_stress_forward_their_argv(monkeypatch, command) -> None:
    seen = []
    module = types.ModuleType(cli._FORWARDED[command][0])
    module.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert cli.main([command, "--help", "-n", "3", "run"]) == 7
    assert seen == [["--help", "-n", "3", "run"]]


# -- rustasync's primitives under asyncio's machinery -------------------------------------------


async def _producer_consumer() -> list[int]:
    q = rustasync.Queue()
    got = []

    async def consume():
        while True:
            got.append(await q.get())
            q.task_done()

    consumer = asyncio.ensure_future(consume())
    await rustasync.gather(*(q.put(i) for i in range(5)))
    await q.join()
    consumer.cancel()
    await rustasync.sleep(0)
    return got


def test_primitives_under_runner() -> None:
    with asyncio.Runner() as runner:
        assert runner.run(_producer_consumer()) == [0, 1, 2, 3, 4]
        assert runner.run(rustasync.sleep(0.001, "again")) == "again"


def test_primitives_under_task_group() -> None:
    async def main():
        q = rustasync.LifoQueue()
        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                tg.create_task(q.put(i))
            tg.create_task(rustasync.sleep(0.001))
        return [q.get_nowait() for _ in range(3)]

    assert asyncio.run(main()) == [2, 1, 0]


def test_primitives_under_timeout() -> None:
    async def main():
        q = rustasync.PriorityQueue()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await q.get()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await rustasync.sleep(10)
        return await asyncio.wait_for(rustasync.gather(rustasync.sleep(0, 1)), 1)

    assert asyncio.run(main()) == [1]


@pytest.mark.asyncio
async def test_primitives_under_pytest_asyncio() -> None:
    assert await _producer_consumer() == [0, 1, 2, 3, 4]


def test_primitives_under_anyio_asyncio_backend() -> None:
    async def main():
        q = rustasync.Queue()
        async with anyio.create_task_group() as tg:
            tg.start_soon(q.put, "x")
            tg.start_soon(rustasync.sleep, 0.001)
        with anyio.fail_after(1):
            return await rustasync.gather(q.get(), rustasync.sleep(0, "y"))

    assert anyio.run(main, backend="asyncio") == ["x", "y"]
