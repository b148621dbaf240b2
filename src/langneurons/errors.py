"""User-facing errors.

Anything a user can cause (bad path, bad corpus, unsupported model, wrong neuron file) raises
:class:`LangNeuronsError`; the CLI prints its message on one line and exits with status 2. Something
that is allowed but probably not meant (a corpus file that does not look like a language) is a
:class:`LangNeuronsWarning`, which the CLI prints on one line and carries on.
"""


class LangNeuronsError(Exception):
    """An error caused by the user's input, reported without a traceback."""


class LangNeuronsWarning(UserWarning):
    """Input that is accepted but probably a mistake, reported on one line."""
