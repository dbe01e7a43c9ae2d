"""The error a user can act on: printed as one line, never a traceback."""


class UserError(Exception):
    """Bad input from the user: printed as a one-line message, never a traceback."""
