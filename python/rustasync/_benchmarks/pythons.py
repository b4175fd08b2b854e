"""The benchmark matrix on every Python of the machine.

Each interpreter gets a virtual environment of its own (under ``envs``) with
a release wheel of rustasync built for it from a checkout (``maturin build
--release -i PYTHON``, one cargo target directory per Python so that later
builds are incremental) and the loops and peers that install on it. The
matrix then runs in a subprocess of that interpreter, which writes its
results as JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = (
    "uvloop>=0.19",
    "rloop>=0.5",
    "janus>=1.0",
    "culsans>=0.9",
    "aiologic>=0.14",
)
_PROBE = (
    "import sys, sysconfig; "
    "print(sys.version_info[0], sys.version_info[1], "
    "int(bool(sysconfig.get_config_var('Py_GIL_DISABLED'))), sys.executable)"
)


def _probe(exe: str) -> tuple[tuple[int, int], bool, str] | None:
    """(version, free-threaded, executable) of an interpreter that runs and
    can make virtual environments, else None."""
    try:
        out = subprocess.run(
            [exe, "-c", _PROBE + "; import venv, ensurepip"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor, ft, path = out.stdout.split(maxsplit=3)
    return (int(major), int(minor)), ft == "1", path.strip()


def _candidates() -> list[str]:
    """`python3.X` on PATH, then every CPython 3 that pyenv has."""
    found = [p for m in range(11, 40) if (p := shutil.which(f"python3.{m}"))]
    pyenv = shutil.which("pyenv")
    if pyenv:
        out = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True)
        for v in out.stdout.split():
            if re.fullmatch(r"3\.\d+\.\d+", v):
                prefix = subprocess.run(
                    [pyenv, "prefix", v], capture_output=True, text=True
                ).stdout.strip()
                if prefix:
                    found.append(os.path.join(prefix, "bin", "python3"))
    return found


def discover() -> list[tuple[str, str]]:
    """(version, executable) of one interpreter per CPython 3.11+ version
    found, oldest first. Free-threaded builds are left out: rustasync needs
    the GIL (it declares `gil_used`)."""
    by_version: dict[tuple[int, int], str] = {}
    for exe in _candidates():
        info = _probe(exe)
        if info is None:
            continue
        version, free_threaded, path = info
        if version >= (3, 11) and not free_threaded:
            by_version.setdefault(version, path)
    return [(f"{v[0]}.{v[1]}", by_version[v]) for v in sorted(by_version)]


def _run(cmd: list[str], **kw: Any) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def prepare(version: str, exe: str, source: Path, envs: Path) -> tuple[str, list[str]]:
    """A venv for `exe` with rustasync built from `source` and the peers that
    install. Returns its interpreter and the packages that did not install."""
    env = envs / f"py{version}"
    python = env / "bin" / "python"
    if not python.exists():
        _run([exe, "-m", "venv", str(env)])
        _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    wheels = envs / "wheels" / version
    shutil.rmtree(wheels, ignore_errors=True)
    _run(
        [sys.executable, "-m", "maturin", "build", "--release", "--quiet"]
        + ["-i", exe, "-o", str(wheels), "-m", str(source / "Cargo.toml")],
        env={**os.environ, "CARGO_TARGET_DIR": str(envs / f"target-{version}")},
    )
    (wheel,) = wheels.glob("rustasync-*.whl")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    _run(pip + ["--force-reinstall", "--no-deps", str(wheel)])
    failed = []
    for package in PACKAGES:
        try:
            _run(pip + ["--only-binary", ":all:", package])
        except subprocess.CalledProcessError:
            failed.append(package)
    return str(python), failed


def run_all(
    pythons: list[tuple[str, str]],
    source: Path,
    envs: Path,
    child_args: list[str],
) -> list[dict[str, Any]]:
    """Prepare and run the matrix on every interpreter; their results."""
    if not (source / "Cargo.toml").exists():
        raise SystemExit(
            f"--pythons builds rustasync for each Python from a checkout: no Cargo.toml in "
            f"{source} (give --source DIR)"
        )
    envs.mkdir(parents=True, exist_ok=True)
    results = []
    for version, exe in pythons:
        python, failed = prepare(version, exe, source, envs)
        if failed:
            print(f"Python {version}: not installed: {', '.join(failed)}", file=sys.stderr)
        out = envs / f"matrix-{version}.json"
        # Its table comes back as JSON, shown with the others at the end.
        _run(
            [python, "-m", "rustasync", "bench", "--matrix", "--json", str(out), *child_args],
            stdout=subprocess.DEVNULL,
        )
        results.append(json.loads(out.read_text()))
    return results
