"""User-facing errors.

Anything a user can cause (bad path, bad corpus, unsupported model, wrong neuron file) raises
:class:`LangNeuronsError`; the CLI prints its message on one line and exits with status 2.
"""


class LangNeuronsError(Exception):
    """An error caused by the user's input, reported without a traceback."""
