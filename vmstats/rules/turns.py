"""Turns: the deliveries of one alert to one action go one after another, in the order raised.

An action sends up to its concurrency at once (a command's 8 programs, a webhook's 16
requests, an apprise action's threads), and each delivery is retried on its own: so an alert's
"resolved" could be run, or finish, before its "firing" (a slow program, a first attempt that
failed and was retried after the second).  A receiver that opens a ticket on firing and closes
it on resolved saw the close first, and kept the ticket open for good.  So the dispatcher puts
each delivery in the line of its action and alert (``grouping.identity``: rule, scope, and
whether it is a scaling decision) as it is held, and a delivery is sent only once every one
before it in its line is done: delivered, given up or dropped, retries included.  Lines of
different alerts do not wait for one another: they share only the action's concurrency.

One piece for every kind of action, since the retries that reorder are the dispatcher's.
"""

from collections.abc import Hashable


class Turns:
    """Keys in lines, first come first served; a key asking out of turn waits for its turn."""

    def __init__(self) -> None:
        #: line -> its keys in the order they joined -> True once the key asked for its turn
        #: too early and waits for ``leave`` to hand it over.
        self._lines: dict[Hashable, dict[str, bool]] = {}
        self._line_of: dict[str, Hashable] = {}

    def __len__(self) -> int:
        """Keys in a line (the first of each included)."""
        return len(self._line_of)

    def join(self, line: Hashable, key: str) -> None:
        """``key`` takes its place at the end of ``line`` (once: joining again keeps it)."""
        if key not in self._line_of:
            self._line_of[key] = line
            self._lines.setdefault(line, {})[key] = False

    def ready(self, key: str) -> bool:
        """Whether ``key`` may go now: it is the first of its line, or in none.  Otherwise it
        waits, and the ``leave`` of the one before it returns it."""
        line = self._line_of.get(key)
        if line is None:
            return True
        keys = self._lines[line]
        if next(iter(keys)) == key:
            return True
        keys[key] = True
        return False

    def waiting(self) -> int:
        """Keys that asked out of turn and wait for the ones before them."""
        return sum(asked for keys in self._lines.values() for asked in keys.values())

    def leave(self, key: str) -> str | None:
        """``key`` is done (or let go): out of its line.  Returns the key whose turn it now is
        if that one already asked for it (it is to go now), else None."""
        line = self._line_of.pop(key, None)
        if line is None:
            return None
        keys = self._lines[line]
        was_first = next(iter(keys)) == key
        del keys[key]
        if not keys:
            del self._lines[line]
            return None
        if not was_first:
            return None
        first = next(iter(keys))
        if keys[first]:
            keys[first] = False
            return first
        return None
