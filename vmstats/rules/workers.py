"""Threads of one's own for blocking calls, so one kind of work never queues behind another.

The reactor's shared thread pool is one queue without a cap per user: a mail
server that accepts and never answers held its threads, and the action log's
fsyncs, which every delivery waits for, queued behind them.  So the action log
writes on a thread of its own and each apprise action sends on a few of its
own: a dead target delays only its own deliveries.  The threads are daemons
and nobody joins them: a send that never returns cannot hold up the server's
exit (its delivery has no logged success, so the next start sends it again).
"""

import queue
import threading
from collections.abc import Callable

from twisted.internet import defer
from twisted.python.failure import Failure


class Workers:
    """At most ``size`` daemon threads running calls in order; ``run`` gives a Deferred.

    A call whose Deferred has fired before a thread takes it (cancelled, timed out) is
    skipped, so a backlog of sends to a dead target shrinks as their deadlines pass.
    """

    def __init__(self, reactor, name: str, size: int):
        self.reactor = reactor
        self.name = name
        self.size = size
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def run(self, function: Callable, *args) -> defer.Deferred:
        """Call ``function(*args)`` on one of the threads; the Deferred gets what it returns."""
        if self._closed:
            return defer.fail(RuntimeError("%s: closed" % self.name))
        done: defer.Deferred = defer.Deferred()
        self._queue.put((done, function, args))
        if len(self._threads) < self.size:  # started as needed, never more than size
            thread = threading.Thread(target=self._work, name="%s-%d" % (self.name, len(self._threads)),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()
        return done

    def close(self) -> None:
        """No new calls; each thread ends after what was queued before (never waited for)."""
        self._closed = True
        for _thread in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            done, function, args = item
            if done.called:  # given up on while it waited
                continue
            try:
                result = function(*args)
            except BaseException:
                result = Failure()
            self.reactor.callFromThread(_fire, done, result)


def _fire(done: defer.Deferred, result) -> None:
    if done.called:  # timed out or cancelled meanwhile: its errback has run
        return
    if isinstance(result, Failure):
        done.errback(result)
    else:
        done.callback(result)
