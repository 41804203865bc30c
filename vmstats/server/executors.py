"""Ending a process pool (``ProcessPoolExecutor``) that must not be waited for.

The writers' and the decoders' pools are both executors: a worker that dies breaks its
executor, which fails every task it held, and the server starts a new one.  A broken or stuck
executor is ended here, from the reactor, without waiting on it.
"""

from concurrent.futures import ProcessPoolExecutor


def kill(executor: ProcessPoolExecutor) -> None:
    """Shut ``executor`` down without waiting and kill its processes (SIGKILL: a stopped
    process ignores SIGTERM until it runs again, and the writers ignore it for good)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
