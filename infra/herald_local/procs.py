"""Child processes that can never outlive the local stack.

Every child (moto, each function instance) runs in its own process group so that a kill reaches
whatever it forked, and gets SIGKILL from the kernel if the stack itself dies without cleaning
up (PR_SET_PDEATHSIG). Together with the signal handlers and the --parent-pid watcher this is
what makes "nothing is left running" hold even after `kill -9` of the stack.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

# Function logs can be single long JSON lines; asyncio's default 64 KiB line limit would raise.
_LINE_LIMIT = 1 << 20


def _die_with_parent() -> None:
    # Runs in the forked child before exec. Only a plain libc call: no locks, no allocation
    # that another (vanished) thread of the parent could hold, so it is safe despite the
    # thread pool the stack uses for boto3.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def spawn(
    argv: Sequence[str], env: dict[str, str], cwd: str | None = None
) -> asyncio.subprocess.Process:
    """Start `argv` in a new session with stdout/stderr piped (relay them with `relay`)."""
    # The PDEATHSIG is tied to the forking *thread*: asyncio forks from the event-loop thread,
    # which lives as long as the stack, so the signal fires exactly when the stack is gone.
    return await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        limit=_LINE_LIMIT,
    )


def emit(prefix: str, line: str) -> None:
    """One line of a child's output (or about it) on the stack's stdout: `[prefix] line`."""
    sys.stdout.write(f"[{prefix}] {line}\n")
    sys.stdout.flush()


async def relay(stream: asyncio.StreamReader | None, prefix: str) -> None:
    """Copy `stream` line by line to stdout as `[prefix] line` until EOF."""
    if stream is None:
        return
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # asyncio has already discarded a line over the limit
            emit(prefix, f"<a line longer than {_LINE_LIMIT} bytes was dropped>")
            continue
        if not raw:
            return
        emit(prefix, raw.decode("utf-8", "replace").rstrip("\r\n"))


def kill_group(proc: asyncio.subprocess.Process, *, reaped: bool = False) -> None:
    """SIGKILL the process group of `proc` (its leader). Once the leader is reaped its group
    lives on only through what it forked; `reaped=True` clears that, right after the reaping
    (the group id cannot have been reused yet)."""
    if proc.returncode is not None and not reaped:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the group of `proc` and reap it. Nothing the stack runs keeps state worth a
    graceful stop (moto's is in memory; Lambda gives functions no shutdown either), and moto would
    otherwise linger until its in-flight long-polls end."""
    kill_group(proc)
    await proc.wait()


def describe_exit(returncode: int) -> str:
    """Lambda's wording for a runtime exit: 'exit status 3' or 'signal: killed'."""
    if returncode < 0:
        name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {returncode}"
