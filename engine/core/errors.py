"""Errors a user can cause. Their message is one line naming the problem and what to do."""


class UserError(Exception):
    """A problem with the user's input (path, word, checkpoint, index...).

    The CLI prints ``error: <message>`` and exits non-zero without a traceback; the engine
    server answers it with a 4xx. Raise it before any stored data is touched.
    """


MAX_MESSAGE = 400  # characters of an error message shown (user input echoed in it included)


def one_line(message) -> str:
    """An error message as printed: one line, at most MAX_MESSAGE characters (a 1 MB caption
    quoted in it is cut, with its length said). The cut is in the middle: a message names the
    problem first and what to do last, and both must survive."""
    text = " ".join(str(message).split())
    if len(text) <= MAX_MESSAGE:
        return text
    note = f" ... ({len(text):,} characters in all) ... "
    keep = MAX_MESSAGE - len(note)
    return f"{text[: keep - keep // 3]}{note}{text[-(keep // 3) :]}"
