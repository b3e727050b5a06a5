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
