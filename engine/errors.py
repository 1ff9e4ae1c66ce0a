"""Errors a user can cause. Their message is one line naming the problem and what to do."""


class UserError(Exception):
    """A problem with the user's input (path, word, checkpoint, index...).

    The CLI prints ``error: <message>`` and exits non-zero without a traceback; the engine
    server answers it with a 4xx. Raise it before any stored data is touched.
    """
