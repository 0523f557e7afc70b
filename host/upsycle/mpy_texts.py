"""The node's log texts out of a board's heap: a board build (.mpy) moves
every ``"upsycle: ..."`` string of the firmware's modules into one file
beside them (TEXTS_FILE) and reads a text from it when the line is logged.

A .mpy module keeps each string constant of more than 10 characters as an
object in the heap for as long as it is loaded (16 bytes and the text
rounded up to 16: some 80 bytes for a 60-character log line), and the
modules a running node holds carried some 40 log lines, 3.5 KB of a
Pico W's heap spent on sentences printed once in a while
(docs/node.md, "Log texts on the flash, a shorter tail"). A frozen image keeps its strings
in flash already and is not rewritten; the host and the tests run the
sources as they are.

The rewrite, in each firmware module (dotted name under ``firmware``):

- ``"upsycle: ..." % x`` becomes ``_text(offset, length, (x,))``;
- any other ``"upsycle: ..."`` becomes ``_text(offset, length)``;
- and the module gets ``from firmware.platform import text as _text``
  (firmware/platform.py's ``text``: it reads the bytes at offset, formats
  them, and when the file cannot be read says the offset and the values).

The error families' lists of kinds (``KINDS = "..."`` in a shared_protocol
or firmware module, read by the family's ``__getattr__`` when it makes a
class: shared_protocol/errors.py ``kind``) go to the same file: the
assignment goes, and each read of ``KINDS`` in a function becomes
``(_read_line, offset, length)``, which ``kind`` calls for the line of the
kind it makes (firmware/platform.py's ``read_line``: a
line at a time, never the whole list in one block; it raises OSError or
MemoryError when it cannot read, as making the class would have raised
MemoryError). Some 2 KB of heap for the node's ten families.

The same text in several modules is stored once. What cannot be rewritten
faithfully is refused (TextsError): a module that already binds ``_text``
or ``_read_line``, a log text in an f-string, a ``KINDS`` read outside a
function or bound again. firmware.platform, which reads the file, keeps
its own texts (the line it prints when the file cannot be read).
"""

import ast

PREFIX = "upsycle: "
PACKAGE = "firmware"
# Module globals holding a text read only inside functions (in any board
# module: shared_protocol's and firmware's).
FLASH_GLOBALS = ("KINDS",)
# Where the texts go, beside the firmware's modules; firmware/platform.py
# looks for "firmware/texts.txt" under each sys.path entry.
TEXTS_FILE = "lib/firmware/texts.txt"
READER_MODULE = "firmware.platform"
LOCAL_NAME = "_text"            # firmware.platform.text, for log lines
READ_NAME = "_read_line"        # firmware.platform.read_line, for FLASH_GLOBALS
# Part of the build's cache key.
VERSION = "texts-1"


class TextsError(Exception):
    """A module's log texts cannot be moved without changing what it does."""


def _is_text(node):
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(PREFIX)


class _Mover(ast.NodeTransformer):
    def __init__(self, name, store, blob, flash_globals, logs):
        self.name = name
        self.store = store          # text -> (offset, length); shared by all modules
        self.blob = blob            # the texts file's bytes so far
        self.globals = flash_globals    # name -> its text: module globals moved
        self.logs = logs            # move the log texts too (a firmware module)
        self.used = set()           # the local names of the readers called

    def _ref(self, s):
        """(offset, length) of the text s in the file, stored once."""
        if s not in self.store:
            data = s.encode("utf-8")
            self.store[s] = (len(self.blob), len(data))
            self.blob.extend(data)
        return self.store[s]

    def _call(self, node, s, args=None):
        """_text(offset, length[, (args,)]) for the text s."""
        at, n = self._ref(s)
        self.used.add(LOCAL_NAME)
        call_args = [ast.Constant(at), ast.Constant(n)]
        if args is not None:
            call_args.append(ast.Tuple([args], ast.Load()))
        return ast.copy_location(ast.Call(ast.Name(LOCAL_NAME, ast.Load()), call_args, []), node)

    def _line_reader(self, node, s):
        """(_read_line, offset, length) for the text s (a tuple built when
        read: a lambda would keep its own code in the heap, some 70 bytes
        a family)."""
        at, n = self._ref(s)
        self.used.add(READ_NAME)
        return ast.copy_location(ast.Tuple([ast.Name(READ_NAME, ast.Load()), ast.Constant(at), ast.Constant(n)],
                                           ast.Load()), node)

    def visit_JoinedStr(self, node):
        if self.logs and any(_is_text(v) for v in ast.walk(node)):
            raise TextsError("%s: a log text in an f-string (line %d): write it with %%" % (self.name, node.lineno))
        return self.generic_visit(node)

    def visit_BinOp(self, node):
        if self.logs and isinstance(node.op, ast.Mod) and _is_text(node.left):
            return self._call(node, node.left.value, args=self.visit(node.right))
        return self.generic_visit(node)

    def visit_Expr(self, node):
        if _is_text(node.value):
            return node         # a docstring, or a string statement: compiled away
        return self.generic_visit(node)

    def visit_Constant(self, node):
        return self._call(node, node.value) if self.logs and _is_text(node) else node

    def visit_Name(self, node):
        if node.id in self.globals and isinstance(node.ctx, ast.Load):
            return self._line_reader(node, self.globals[node.id])
        return node


def _flash_globals(name, tree):
    """{global: its text} of the FLASH_GLOBALS tree binds once, at its top
    level, to a string, and reads only inside functions; those
    assignments are taken out of tree."""
    out = {}
    for stmt in list(tree.body):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                and stmt.targets[0].id in FLASH_GLOBALS and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            if stmt.targets[0].id in out:
                raise TextsError("%s binds %s twice" % (name, stmt.targets[0].id))
            out[stmt.targets[0].id] = stmt.value.value
            tree.body.remove(stmt)
    if not out:
        return out
    in_functions = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_functions.update(id(n) for n in ast.walk(fn))
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id in out:
            if not isinstance(n.ctx, ast.Load) or id(n) not in in_functions:
                raise TextsError("%s: %s is bound again or read outside a function (line %d): it must "
                                 "stay in the heap" % (name, n.id, n.lineno))
        if isinstance(n, (ast.Global, ast.Nonlocal)) and set(n.names) & set(out):
            raise TextsError("%s: a function declares %s global" % (name, ", ".join(sorted(set(n.names) & set(out)))))
        if isinstance(n, ast.arg) and n.arg in out:
            raise TextsError("%s: a function takes an argument %s" % (name, n.arg))
    for g, text in out.items():
        # read_line stops at the list's end only after a newline (the next
        # text follows in the file), and kind() finds a name after one.
        if not (text.startswith("\n") and text.endswith("\n")):
            raise TextsError("%s: %s must start and end with a newline" % (name, g))
    return out


def _import_at(tree):
    """Where the import goes: after the docstring and any __future__ import."""
    i = 0
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        i = 1
    while i < len(body) and isinstance(body[i], ast.ImportFrom) and body[i].module == "__future__":
        i += 1
    return i


def move(sources):
    """sources: {dotted module name: (source text, is a package __init__)}
    of every board module. Returns (the same with the texts moved, the
    texts file's bytes)."""
    out = dict(sources)
    store = {}
    blob = bytearray()
    for name in sorted(sources):
        if name == READER_MODULE:
            continue
        text, is_package = sources[name]
        tree = ast.parse(text)
        flash_globals = _flash_globals(name, tree)
        in_package = name == PACKAGE or name.startswith(PACKAGE + ".")
        if not flash_globals and not (in_package and any(_is_text(n) for n in ast.walk(tree))):
            continue
        for n in ast.walk(tree):
            for local in (LOCAL_NAME, READ_NAME):
                if (isinstance(n, ast.Name) and n.id == local) or (isinstance(n, ast.arg) and n.arg == local) \
                        or (isinstance(n, ast.alias) and (n.asname or n.name) == local) \
                        or (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == local):
                    raise TextsError("%s binds %s already: its texts cannot be moved" % (name, local))
        mover = _Mover(name, store, blob, flash_globals, in_package)
        tree = mover.visit(tree)
        if mover.used:
            imp = ast.ImportFrom(READER_MODULE, [ast.alias(local[1:], local) for local in sorted(mover.used)], 0)
            tree.body.insert(_import_at(tree), imp)
        ast.fix_missing_locations(tree)
        out[name] = (ast.unparse(tree) + "\n", is_package)
    return out, bytes(blob)
