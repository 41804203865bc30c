"""The keeper of a ``command`` action's program: run as ``python -I -S keeper.py SERVER ARGV...``.

It makes a session of its own (so a timeout, which kills the session's process group, kills
the program with every process it started: a script's cloud CLI hung on a dead API outlived
its parent, one more at every retry), runs the program in it as its child, and exits as the
program did: the same exit status, or killed by the same signal.  Its output and stdin are
the program's own (inherited).

It stays, rather than becoming the program by an exec, to end the session when the server
ends.  Killed (SIGKILL, the OOM killer), the server left a running program behind, and a hung
one for good, still holding what it held; the next start ran the delivery again beside it.  So
the keeper asks the kernel for a parent-death signal (``PR_SET_PDEATHSIG``, Linux; see
vmstats/server/lifeline.py for its pitfalls, met alike here: the server spawns programs from
its main thread, and the keeper checks its parent after the call, the server having perhaps
died before it) of SIGTERM, on which it kills its session's process group, itself included.
A process the program moved to a session or group of its own (a daemon) is beyond its reach.

Standard library only, and nothing else imported: it runs isolated (``-I -S``), for every
delivery.
"""

import ctypes
import os
import signal
import sys

#: prctl(2)'s option that sets the signal this process gets when its parent (thread) ends.
PR_SET_PDEATHSIG = 1
#: Exit status when the program cannot be run (a shell's "command not found").
CANNOT_RUN = 127


def _end_session(_signum=None, _frame=None) -> None:
    """The server is gone (or someone asked the keeper to end): the whole session goes."""
    os.killpg(0, signal.SIGKILL)


def _tie_to(server: int) -> None:
    signal.signal(signal.SIGTERM, _end_session)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != server:  # died before the call: no signal will come
        _end_session()


def _run(argv: list[str]) -> None:
    """In the forked child: become the program, with the signals as a program expects them
    (Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec)."""
    for number in (signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, ("cannot run %s: %s\n" % (argv[0], exc.strerror)).encode("utf-8", "replace"))
    os._exit(CANNOT_RUN)


def main(argv: list[str]) -> None:
    server, program = int(argv[1]), argv[2:]
    os.setsid()
    _tie_to(server)
    child = os.fork()
    if child == 0:
        _run(program)
    _pid, status = os.waitpid(child, 0)  # a signal's handler runs; the wait goes on (PEP 475)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)  # a signal that does not end a process by default
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv)
