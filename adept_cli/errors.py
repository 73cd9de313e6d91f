"""The base of every error a user can fix: the CLI prints its message on one line, never a traceback."""


class AdeptError(Exception):
    """Bad input or an impossible request; the message names the file, field or option and what to do."""
