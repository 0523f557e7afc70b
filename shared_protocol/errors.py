"""The one error family of the wire protocol.

Every error that shared code raises on purpose is an ``UpsycleError`` with a
short machine-readable ``code`` (a str constant) and a message a person can act
on. Anything else that escapes shared code is a bug.

Split, as in h11: ``LocalError`` means the caller misused an API (asked to
encode a value the format cannot carry, exceeded a local limit); ``RemoteError``
means the bytes that came in are bad (the peer, the disk or the radio sent
garbage). Protocol modules subclass these two.
"""


class UpsycleError(Exception):
    """Base of every error raised on purpose by shared code."""

    code = "error"

    def __init__(self, code=None, message=""):
        if code is not None:
            self.code = code
        self.message = message
        super().__init__("%s: %s" % (self.code, message) if message else self.code)


class LocalError(UpsycleError):
    """The caller asked for something the protocol cannot do."""


class RemoteError(UpsycleError):
    """Input from outside (network, flash, disk) is malformed or not allowed."""
