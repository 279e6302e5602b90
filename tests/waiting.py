"""Test helper: wait for a condition, with a deadline, instead of sleeping a fixed time."""

from __future__ import annotations

import time


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
