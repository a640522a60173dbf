"""Stopping a child process: one way for the embedded nats-server, tests and bench."""

from __future__ import annotations

import asyncio
import contextlib
import signal


async def stop_process(
    proc: asyncio.subprocess.Process, sig: int | None = signal.SIGTERM, grace: float = 8.0
) -> int:
    """Send ``sig`` (None: the caller already asked it to stop), wait up to ``grace``
    seconds for the process to end, SIGKILL it past that; its exit status."""
    if proc.returncode is None:
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            async with asyncio.timeout(grace):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return await proc.wait()
