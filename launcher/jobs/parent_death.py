"""Run a command that gets a signal when its parent dies: `python -m launcher.jobs.parent_death
SIGNAL PARENT_PID COMMAND...`.

It sets the kernel's parent-death signal (Linux PR_SET_PDEATHSIG, which also fires when the
parent is SIGKILLed and survives the exec), checks that PARENT_PID is still its parent (it may
have died already), and execs COMMAND. Setting it from the child itself rather than from a
`preexec_fn` matters: a preexec_fn runs between fork and exec in a copy of a threaded server
(gRPC's threads among them), where calling into ctypes crashed the server once; without one,
`subprocess` forks by vfork and runs no Python in the child.

The signal fires when the *thread* that started the child ends, so start it from a thread
that lives as long as the child should.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def command(sig: signal.Signals, argv: list[str]) -> list[str]:
    """`argv` wrapped so that it gets `sig` when this process (the caller) dies."""
    return [sys.executable, "-m", "launcher.jobs.parent_death", sig.name, str(os.getpid()), *argv]


def main(args: list[str]) -> int:
    name, parent, argv = args[0], int(args[1]), args[2:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.Signals[name])) != 0:
        print(f"parent_death: prctl failed (errno {ctypes.get_errno()})", file=sys.stderr)
        return 1
    if os.getppid() != parent:  # the parent died before the signal was set
        return 1
    os.execvp(argv[0], argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
