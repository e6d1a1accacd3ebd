"""Fault injection for tests; never set in production.

NEXUS_FAULT_AFTER_STEP=N signals this process right after the Nth step it
completes: SIGKILL by default (a power cut or an OOM kill: no cleanup runs, no
finally blocks, no lock release but the kernel's), SIGSTOP with
NEXUS_FAULT_SIGNAL=STOP (the process keeps its lock until continued; tests use
it to hold a run in the middle). Steps are the executor's applied actions and
the checkpoints long operations declare inside themselves (a policy import:
the list stored, the new generation built, its maps in the idle slots, the
switch, the old generation dropped), counted in the order they complete.
"""
from __future__ import annotations

import os
import signal

FAULT_ENV = "NEXUS_FAULT_AFTER_STEP"
FAULT_SIGNAL_ENV = "NEXUS_FAULT_SIGNAL"
FAULT_SIGNALS = {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}

_done = 0


def step_done(what: str = "") -> None:
    """Call right after a step completed (its effects, and the state recording
    them, are written)."""
    global _done
    want = os.environ.get(FAULT_ENV)
    if not want:
        return
    _done += 1
    if _done == int(want):
        os.kill(os.getpid(), FAULT_SIGNALS.get(os.environ.get(FAULT_SIGNAL_ENV, "KILL"), signal.SIGKILL))
