"""The one error family of the wire protocol.

Every error that shared code raises on purpose is an ``UpsycleError`` with a
short machine-readable ``code`` (a str constant) and a message a person can act
on. Anything else that escapes shared code is a bug.

The message is ``__debug__ and "..."`` at every raise in board code: a
board build compiles with ``mpy-cross -O3`` (host/upsycle/firmware_build.py),
where ``__debug__`` is a constant False and the compiler folds the whole
message away, text and formatting (a .mpy keeps every distinct string in
the board's heap, some 70 bytes each: 15 KB of a running node's modules,
docs/node.md "Error text a board does not keep"). On a board the error then says its class and
code; on the host, in the VM tests and in a frozen image the text is there.

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
        # False where a board build folded the text away (see above)
        self.message = message = message or ""
        super().__init__("%s: %s" % (self.code, message) if message else self.code)


class LocalError(UpsycleError):
    """The caller asked for something the protocol cannot do."""


class RemoteError(UpsycleError):
    """Input from outside (network, flash, disk) is malformed or not allowed."""


def kind(name, kinds, made):
    """The error class ``name`` of a family module, made the first time it is
    asked for and kept in the family's dict ``made`` (which holds its
    module's name under ``__name__``, for the classes' ``__module__``).

    A family module lists its kinds in one string, a line each:
    ``Name Base code`` and, as a fourth word, ``clear`` when the error may
    clear later or ``final`` when it does not (``may_clear``, see
    groups/errors.py: its family base says ``final``, so every kind below
    answers it), and answers ``module.Name`` through a module
    ``__getattr__`` (PEP 562; MicroPython has it too) calling this. A class
    costs a board about 170 bytes of heap with .mpy modules, 40-odd of them
    were 7 KB; made on first use, a node holds only the kinds it has raised
    or caught; the family bases (GroupError, CryptoUsageError...) too, as
    a line like the others. Board modules therefore name a kind through its module
    (``errors.Malformed``) at the raise or ``except``, never by importing
    it at the top, which would make the class at import time. A module
    that raises its own kinds asks for them by name through this (its
    ``_error``), so a kind already made is returned, not made again.
    The kinds live in ``made``, not in the module's globals: the board
    build packs several families into one module (host/upsycle/mpy_bundle.py),
    where two families' kinds of one name must stay two classes.

    ``kinds`` may also be a tuple (reader, at, n) where reader(at, n, name)
    gives the line of a name (None for none): a board build keeps the
    families' lists on the flash and passes one that reads the line asked
    for (host/upsycle/mpy_texts.py), a few dozen bytes at a time where the
    list would be read whole. A family's
    ``__getattr__`` asks ``made`` first (``_MADE.get(name) or kind(name,
    KINDS, _MADE)``), so the flash is read only when a class is made.
    """
    if name in made:
        return made[name]
    if isinstance(kinds, str):
        i = kinds.find("\n" + name + " ")
        line = None if i < 0 else kinds[i + 1:kinds.find("\n", i + 1)]
    else:
        line = kinds[0](kinds[1], kinds[2], name)
    if line is None:
        raise AttributeError(name)
    line = line.split()
    b = line[1]
    base = LocalError if b == "LocalError" else RemoteError if b == "RemoteError" else kind(b, kinds, made)
    attrs = {"code": line[2], "__module__": made["__name__"]}
    if len(line) > 3:
        attrs["may_clear"] = line[3] == "clear"
    cls = made[name] = type(name, (base,), attrs)
    return cls
