"""The one error type of the capacity commands and API."""

from vmstats.report.settings import ReportError


class CapacityError(ReportError):
    """Bad operator input (inventory, profile, manifest): one readable line, nothing changed.

    A ReportError, so a command that runs the report and the capacity code
    together reports both kinds the same way.
    """
