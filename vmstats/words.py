"""How a count reads in a line an operator reads, for every command.

Kept free of imports so the agent (Python 3.6+, stdlib only), the capacity
commands and the report all word a count the same way without one of them
paying for another's libraries.
"""


def plural(count: int, noun: str, nouns: str = "") -> str:
    """``noun`` as ``count`` of it reads ("1 VM", "3 VMs"; ``nouns`` if irregular): the
    operator reads these lines, and "1 VMs" makes one doubt the figure beside it."""
    return noun if count == 1 else nouns or noun + "s"


def number(count: int) -> str:
    """``count`` with its thousands grouped, "100,000": the capacity commands count VMs and hosts
    by the hundred thousand, where "100000 VMs" is misread by a power of ten at a glance."""
    return "{:,}".format(count)


def counted(count: int, noun: str, nouns: str = "", grouped: bool = False) -> str:
    """``count`` and its noun in one: ``counted(1, "host")`` is "1 host", ``counted(2, "host")`` "2 hosts".

    ``grouped``: the count as number() gives it, "100,000 VMs" (the capacity commands' lines);
    the other commands' lines keep their plain digits, which scripts and logs match on.
    """
    return "%s %s" % (number(count) if grouped else "%d" % count, plural(count, noun, nouns))


def part_of(part: int, whole: int, noun: str, nouns: str = "", grouped: bool = False) -> str:
    """"``part`` of ``whole``" with the noun read after the whole: "1 of 1 host", "2 of 3 hosts"
    (``grouped``: both as number() gives them, "1,090 of 100,000 VMs")."""
    return "%s of %s" % (number(part) if grouped else "%d" % part, counted(whole, noun, nouns, grouped))
