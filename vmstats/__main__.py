"""``python -m vmstats`` runs the same command line as the ``vmstats`` script."""

from vmstats.cli import main

if __name__ == "__main__":
    main()
