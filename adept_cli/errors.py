"""The base of every error a user can fix (the CLI prints its message on one line, never a traceback), and
of every warning adept gives about a file or setting (the CLI prints it on one line as `warning: ...`)."""


class AdeptError(Exception):
    """Bad input or an impossible request; the message names the file, field or option and what to do."""


class AdeptWarning(UserWarning):
    """Something a user should know that does not stop the work (a file that cannot be verified, say); the
    message names the file or setting."""
