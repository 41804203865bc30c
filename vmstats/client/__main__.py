"""``python3 -m vmstats.client`` and the zipapp's entry point: the agent alone.

Standard library only (argparse), so it runs from the single-file bundle on
a VM that has nothing but python3 >= 3.6.
"""

import sys


def main(argv=None, prog="vmstats-agent"):
    """Parse settings, run the agent, return the exit status (one line on error)."""
    if sys.version_info < (3, 6):
        sys.stderr.write("vmstats-agent: needs Python 3.6 or newer\n")
        return 1
    from vmstats.client import agent, config
    try:
        settings = config.load(argv, prog=prog)
    except config.ConfigError as exc:
        sys.stderr.write("%s: error: %s\n" % (prog, exc))
        return 2
    return agent.main(settings)


if __name__ == "__main__":
    sys.exit(main())
