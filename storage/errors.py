"""Errors whose message is meant for the user, as one clear line (CLI stderr, UI banner)."""


class WorkbenchError(Exception):
    """Base of every error the workbench reports to a user without a traceback."""


class NotFound(WorkbenchError):
    pass


class InvalidInput(WorkbenchError):
    pass


class Conflict(WorkbenchError):
    pass
