"""The root of every error lit-streaming raises.

Each library error derives from ``LitStreamingError`` and from the builtin it has always been (``ValueError``
for bad data and arguments, ``OSError`` for storage, ``TimeoutError``, ...), so ``except LitStreamingError``
catches everything the library reports while ``except ValueError`` and friends keep working. No imports: the
writer and every format module import this cheaply.
"""


class LitStreamingError(Exception):
    """Base class of the errors raised by ``lit_streaming`` and ``lit_streaming_writer``."""


class LitStreamingValueError(ValueError, LitStreamingError):
    """A bad argument or value (what the library once raised as a plain ``ValueError``)."""


class LitStreamingTypeError(TypeError, LitStreamingError):
    """An argument of the wrong type (what the library once raised as a plain ``TypeError``)."""


def is_positive_int(value: object) -> bool:
    """The test behind every "must be an int >= 1" argument check: ``True`` is an int to Python, never a count."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
