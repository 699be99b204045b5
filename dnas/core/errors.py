"""The exception type every user-facing error in dnas derives from.

The CLI catches :class:`DnasError` and prints its message as one line, so each raise site
must say what is wrong and how to fix it.
"""


class DnasError(ValueError):
    """A user-facing error: bad config, unknown name, malformed genotype/LUT/data."""
