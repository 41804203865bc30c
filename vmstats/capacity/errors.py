"""The one error type of the capacity commands and API."""

from vmstats.inputfile import BadInput
from vmstats.report.settings import ReportError


class CapacityError(ReportError, BadInput):
    """Bad operator input (inventory, profile, manifest, summary): one readable line, nothing
    changed, a usage error's status (options.failure).

    A ReportError, so a command that runs the report and the capacity code
    together reports both kinds the same way; what the logs lack is a plain
    ReportError, a failed run's.
    """
