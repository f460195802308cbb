"""Run a command with a bound on the wait, where what it touches may hang for good.

`subprocess.run(..., timeout=)` KILLs the child on timeout and then waits for it to exit. A child
in uninterruptible sleep (D: a hung NVIDIA driver, a hung mount) does not die until the kernel
call it waits in returns, so that wait, and the start or check behind it, had no end. Here the
child is KILLed and not waited for: a daemon thread reaps it once it ends, if ever."""

from __future__ import annotations

import subprocess
import threading


def run_bounded(
    command: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`command`'s exit status and output (text), its stdin empty; subprocess.TimeoutExpired where
    it does not end in `timeout` s, or whatever interrupts the wait, once it is KILLed: its reaping
    is left to a daemon thread, so a child KILL cannot end yet holds up no one."""
    child = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except BaseException:
        child.kill()
        threading.Thread(target=child.communicate, name=f"reaper of {command[0]}", daemon=True).start()
        raise
    return subprocess.CompletedProcess(command, child.returncode, out, err)
