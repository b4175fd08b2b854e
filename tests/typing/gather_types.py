"""Type-checked, never run: rustasync.gather infers what asyncio.gather infers.

`make lint` runs `mypy --strict` on this file. Each block states, with
assert_type, the type asyncio's stubs give a piece of code, then the same
for rustasync; a worse inference for rustasync fails the check.
"""

from __future__ import annotations

import asyncio
from typing import Any, assert_type

import rustasync


async def one() -> int:
    return 1


async def text() -> str:
    return "a"


async def positional() -> None:
    a = await asyncio.gather(one(), text())
    assert_type(a, tuple[int, str])
    r = await rustasync.gather(one(), text())
    assert_type(r, tuple[int, str])
    # Unpacking keeps each type: switching backends keeps this code well typed.
    x, y = await rustasync.gather(one(), text())
    assert_type(x + 1, int)
    assert_type(y.upper(), str)


async def six_positional() -> None:
    a = await asyncio.gather(one(), text(), one(), text(), one(), text())
    assert_type(a, tuple[int, str, int, str, int, str])
    r = await rustasync.gather(one(), text(), one(), text(), one(), text())
    assert_type(r, tuple[int, str, int, str, int, str])


async def with_exceptions() -> None:
    a = await asyncio.gather(one(), text(), return_exceptions=True)
    assert_type(a, tuple[int | BaseException, str | BaseException])
    r = await rustasync.gather(one(), text(), return_exceptions=True)
    assert_type(r, tuple[int | BaseException, str | BaseException])


async def exceptions_maybe(flag: bool) -> None:
    a = await asyncio.gather(one(), return_exceptions=flag)
    assert_type(a, tuple[int | BaseException])
    r = await rustasync.gather(one(), return_exceptions=flag)
    assert_type(r, tuple[int | BaseException])


async def variadic() -> None:
    a = await asyncio.gather(*[one() for _ in range(3)])
    assert_type(a, list[int])
    r = await rustasync.gather(*[one() for _ in range(3)])
    assert_type(r, list[int])


async def variadic_with_exceptions() -> None:
    a = await asyncio.gather(*[one() for _ in range(3)], return_exceptions=True)
    assert_type(a, list[int | BaseException])
    r = await rustasync.gather(*[one() for _ in range(3)], return_exceptions=True)
    assert_type(r, list[int | BaseException])


async def seven_or_more() -> None:
    a = await asyncio.gather(one(), one(), one(), one(), one(), one(), text())
    assert_type(a, list[object])
    r = await rustasync.gather(one(), one(), one(), one(), one(), one(), text())
    assert_type(r, list[object])


async def sleeps_and_futures(fut: asyncio.Future[bytes]) -> None:
    a = await asyncio.gather(asyncio.sleep(0, "s"), fut)
    assert_type(a, tuple[str, bytes])
    r = await rustasync.gather(rustasync.sleep(0, "s"), fut)
    assert_type(r, tuple[str, bytes])


def the_future_itself() -> None:
    a = asyncio.gather(one(), text())
    assert_type(a, asyncio.Future[tuple[int, str]])
    r = rustasync.gather(one(), text())
    assert_type(r, rustasync.GatheringFuture[tuple[int, str]])
    assert_type(r.result(), tuple[int, str])


async def nothing() -> None:
    r = await rustasync.gather()
    assert_type(r, list[Any])


async def queues() -> None:
    a: asyncio.Queue[int] = asyncio.Queue()
    assert_type(await a.get(), int)
    q: rustasync.Queue[int] = rustasync.Queue()
    assert_type(await q.get(), int)
    assert_type(await q.get_many(4), list[int])
