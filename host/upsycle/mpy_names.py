"""Shorter, shared names in a board's .mpy build.

A board that imports a ``.mpy`` module interns every name the module's code
uses (globals, attributes, function and argument names, short strings) and
never frees one; the names live in pools that double (20, 40, ... 640,
1,280 slots, 7 bytes a slot), so a node that needs one name more than 1,260
pays for a 1,280-slot pool (9 KB) it mostly leaves empty (docs/node.md,
"Names a `.mpy` node interns"). Names that only people read get short names
shared between modules, classes and functions before ``mpy-cross`` sees the
source:

- **positional parameters**, but those of the app API's public functions
  (firmware/app.py, firmware/core.py: a sensor app may pass them by
  keyword): the first renamed becomes ``q0``, the second ``q1`` and so on
  (or the next number a closure does not already use), the same few names
  in every function;
- **a module's globals that no other board file names**: its private
  helpers, classes and tables (``_name``), and in ``shared_protocol`` its
  public ones too, which only the host uses, from source (``firmware``'s
  public names are the firmware's API: apps and tools call them on a
  board): ``_0``, ``_1``, ... in each module (``_N = const(...)`` is then
  dropped by MicroPython itself);
- **private attributes and methods** (``self._name``) of a family of board
  classes (a class and its bases, by name): ``_a0``, ``_a1``, ... in each
  family, ``__slots__`` included.

A module-level function or class renamed by the second rule that nothing
left in its module names is dropped (the host's API in a shared module:
no board code can reach it, and a board would keep its bytecode).

Left as they are, because something could reach a name by its text: every
name a board file uses as an attribute (but a family's own ``self._name``),
a string or a word of one, an imported name, a keyword argument, a method;
a parameter a nested scope binds again; a global a function or class binds
locally; ``self``; keyword-only and star parameters; the parameters of the
app API's public functions.

The result is checked, not trusted: ``check`` compiles the module before
and after with CPython and requires the same instructions and constants,
each name the same or one of the renamed pairs (tests/host/test_mpy_names.py
runs the build's check over every board module; the virtual board tests run
a node from the renamed build).
"""

import ast
import dis

PARAM_PREFIX = "q"
GLOBAL_PREFIX = "_"
ATTR_PREFIX = "_a"
# the statements that bind a name by definition
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class NamesError(Exception):
    """The renaming cannot be applied to this source (a name it would
    introduce is taken), or changed more than names."""


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def _is_const(value):
    return isinstance(value, ast.Call) and getattr(value.func, "id", None) == "const"


def used_names(trees):
    """Names a board module may look up by their text, over all modules:
    attributes, strings, imported names, keyword arguments, def and class
    names. A rename never touches one of these."""
    keep = set()
    for tree in trees:
        # a module-level def or class is a global: _rename_globals decides
        top = {id(n) for n in tree.body}
        for n in ast.walk(tree):
            keep.update(_by_text(n))
            if isinstance(n, _DEFS) and id(n) not in top:
                # a method's name is an attribute; a nested def is a local
                keep.add(n.name)
    return keep


def _by_text(n):
    """The names node n lets code reach by their text: an attribute's, a
    string and each word of it (errors.kind finds classes by the words of
    a table), an imported name, a keyword argument's."""
    if isinstance(n, ast.Attribute):
        return (n.attr,)
    if isinstance(n, ast.Constant) and isinstance(n.value, str):
        return [n.value] + n.value.split()
    if isinstance(n, ast.alias):
        return (n.name.split(".")[-1], n.asname or n.name.split(".")[-1])
    if isinstance(n, ast.keyword) and n.arg:
        return (n.arg,)
    return ()


def _bound_in(node):
    """Names a function, lambda or class binds in its own scope (parameters,
    assignments, loop and with targets, imports, nested def and class names),
    not looking into nested scopes; and the names it declares global or
    nonlocal."""
    bound, declared = set(), set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        for x in a.posonlyargs + a.args + a.kwonlyargs:
            bound.add(x.arg)
        if a.vararg:
            bound.add(a.vararg.arg)
        if a.kwarg:
            bound.add(a.kwarg.arg)
    body = [node.body] if isinstance(node, ast.Lambda) else node.body
    stack = list(body)
    while stack:
        n = stack.pop()
        if isinstance(n, _DEFS):
            bound.add(n.name)
            stack.extend(n.decorator_list)
            if not isinstance(n, ast.ClassDef):
                stack.extend(n.args.defaults + [d for d in n.args.kw_defaults if d])
            else:
                stack.extend(n.bases)
            continue
        if isinstance(n, ast.Lambda):
            stack.extend(n.args.defaults)
            continue
        if isinstance(n, _COMPREHENSIONS):
            # the first iterable is evaluated in this scope; the rest is the
            # comprehension's own (its targets are its locals)
            stack.append(n.generators[0].iter)
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            bound.add(n.id)
        elif isinstance(n, ast.alias):
            bound.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            declared.update(n.names)
        elif isinstance(n, ast.NamedExpr):
            bound.add(n.target.id)
        stack.extend(ast.iter_child_nodes(n))
    return bound, declared


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef) + _COMPREHENSIONS


def _bound_in_scopes(scopes):
    """Every name the scopes bind or declare global or nonlocal."""
    out = set()
    for s in scopes:
        if isinstance(s, _COMPREHENSIONS):
            out |= _comp_targets(s)
        else:
            bound, declared = _bound_in(s)
            out |= bound | declared
    return out


def _all_names(tree):
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            names.add(n.id)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, ast.Attribute):
            names.add(n.attr)
    return names


def _comp_targets(n):
    out = set()
    for g in n.generators:
        for t in ast.walk(g.target):
            if isinstance(t, ast.Name):
                out.add(t.id)
    return out


def _rename_globals(tree, keep, public):
    """Rename the module's private globals, and with ``public`` the others
    too; returns {old: new}."""
    defined = []
    for n in tree.body:
        targets = []
        if isinstance(n, _DEFS):
            targets = [n.name]
        elif isinstance(n, ast.Assign):
            targets = [t.id for t in n.targets if isinstance(t, ast.Name)]
            if targets and _is_private(targets[0]) and _is_const(n.value):
                targets = []        # MicroPython folds and drops these itself
        for name in targets:
            if (_is_private(name) or (public and not name.startswith("__"))) \
                    and name not in keep and name not in defined:
                defined.append(name)
    if not defined:
        return {}
    # a name bound by any function, class or comprehension, or declared
    # global in one, stays: the module-level name is then not the only one
    shadowed = _bound_in_scopes(n for n in ast.walk(tree) if isinstance(n, _SCOPES))
    renames = {}
    taken = _all_names(tree)
    i = 0
    for name in defined:
        if name in shadowed:
            continue
        new = GLOBAL_PREFIX + str(i)
        if new in taken:
            raise NamesError("name %s is taken in this module" % new)
        renames[name] = new
        i += 1
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id in renames:
            n.id = renames[n.id]
        elif isinstance(n, _DEFS) and n.name in renames:
            n.name = renames[n.name]
    return renames


def _drop_unreferenced(tree, renames):
    """Remove the module-level functions and classes that were renamed (no
    other board file names them, nothing reaches them by their text) and
    that nothing left in the module names: the host's API in a shared
    module, which a board would keep in its heap unused. Repeated until
    none is left (a helper only a dropped function called goes too).
    Returns {old name: None} for each dropped, for ``check``."""
    old_of = {new: old for old, new in renames.items()}
    dropped = {}
    while True:
        names = {}
        for n in tree.body:
            for x in ast.walk(n):
                if isinstance(x, ast.Name):
                    names.setdefault(x.id, set()).add(id(n))
        dead = [n for n in tree.body
                if isinstance(n, _DEFS) and n.name in old_of
                and not n.decorator_list and not (names.get(n.name, set()) - {id(n)})]
        if not dead:
            return dropped
        for n in dead:
            tree.body.remove(n)
            dropped[old_of[n.name]] = None


def _rename_params(fn, keep, taken):
    """Rename fn's positional parameters not in keep; returns {old: new}.
    A name already used inside fn (a closure's reference to an outer
    function's renamed parameter) is not given again."""
    a = fn.args
    params = a.posonlyargs + a.args
    body_nodes = [fn.body] if isinstance(fn, ast.Lambda) else fn.body
    rebound = _bound_in_scopes(s for b in body_nodes for s in ast.walk(b) if isinstance(s, _SCOPES))
    calls_locals = any(isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("locals", "vars")
                       for b in body_nodes for n in ast.walk(b))
    if calls_locals:
        return {}
    inside = set()
    for b in body_nodes:
        inside |= _all_names(b)
    renames = {}
    for i, p in enumerate(params):
        if p.arg in ("self", "cls") or p.arg in keep or p.arg in rebound:
            continue
        # the parameter's position, or the next number free in fn
        while PARAM_PREFIX + str(i) in inside or PARAM_PREFIX + str(i) in renames.values():
            i += 1
        new = PARAM_PREFIX + str(i)
        if new in taken:
            raise NamesError("name %s is taken in this module" % new)
        renames[p.arg] = new
    if not renames:
        return {}
    for p in params:
        if p.arg in renames:
            p.arg = renames[p.arg]
    for b in body_nodes:
        for n in ast.walk(b):
            if isinstance(n, ast.Name) and n.id in renames:
                n.id = renames[n.id]
    return renames


def _self_attrs(cls):
    """The ``self.<name>`` nodes of cls's methods (nested functions
    included, nested classes not)."""
    out = []
    for m in cls.body:
        if not isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = m.args.posonlyargs + m.args.args
        if not args or args[0].arg != "self" or any(
                getattr(d, "id", None) in ("staticmethod", "classmethod") for d in m.decorator_list):
            continue
        stack = list(m.body)
        while stack:
            n = stack.pop()
            if isinstance(n, ast.ClassDef):
                continue
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self":
                out.append(n)
            stack.extend(ast.iter_child_nodes(n))
    return out


def _own_nodes(cls):
    """The nodes by which a class names its own attributes: ``self.<name>``
    in its methods, its methods' def nodes, the names of its class-level
    statements, and the strings of its ``__slots__``."""
    own = list(_self_attrs(cls))
    level = [st for st in cls.body if isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign))]
    # a class-level name is the class's own only if the class body binds
    # it; any other name read there is a global
    bound = {n.id for st in level for n in ast.walk(st) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for st in cls.body:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            own.append(st)
    for st in level:
        targets = st.targets if isinstance(st, ast.Assign) else [st.target]
        if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in targets):
            own.extend(c for c in ast.walk(st.value) if isinstance(c, ast.Constant) and isinstance(c.value, str))
        own.extend(n for n in ast.walk(st) if isinstance(n, ast.Name) and n.id in bound)
    return own


def _own_name(n):
    if isinstance(n, ast.Attribute):
        return n.attr
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return n.name
    if isinstance(n, ast.Name):
        return n.id
    return n.value


def private_attributes(trees):
    """{class name: {old: new}}: short names for the private attributes and
    methods (``_name``) of board classes, shared by the classes of one
    family (a class and its bases, by name).

    A name stays when anything could reach it but its family's own code
    (``_own_nodes``): an attribute read through another object, a string
    other than the class's ``__slots__``, a name, parameter, keyword or
    import anywhere in board code."""
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    classes = []
    own = set()
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, ast.ClassDef):
                classes.append(n)
                for b in n.bases:
                    bn = b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", None)
                    if bn:
                        parent[find(n.name)] = find(bn)
                find(n.name)
                own.update(id(x) for x in _own_nodes(n))
    blocked = set()
    for tree in trees:
        for n in ast.walk(tree):
            if id(n) in own:
                continue
            blocked.update(_by_text(n))
            if isinstance(n, ast.Name):
                blocked.add(n.id)
            elif isinstance(n, ast.arg):
                blocked.add(n.arg)
            elif isinstance(n, _DEFS):
                blocked.add(n.name)
    family = {}
    for c in classes:
        family.setdefault(find(c.name), set()).update(
            x for x in map(_own_name, _own_nodes(c)) if _is_private(x) and x not in blocked)
    maps = {root: {old: ATTR_PREFIX + str(i) for i, old in enumerate(sorted(names))}
            for root, names in family.items()}
    return {c.name: maps[find(c.name)] for c in classes}


def _rename_attributes(tree, attrs):
    pairs = set()
    for c in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
        m = attrs.get(c.name, {})
        for n in _own_nodes(c):
            old = _own_name(n)
            if old not in m:
                continue
            if isinstance(n, ast.Attribute):
                n.attr = m[old]
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n.name = m[old]
            elif isinstance(n, ast.Name):
                n.id = m[old]
            else:
                n.value = m[old]
            pairs.add((old, m[old]))
    return pairs


def rename(source, keep, app_api=False, public=False, attrs=None):
    """The source with its private globals and positional parameters renamed
    (module docstring above); ``keep``: ``used_names`` of all board modules;
    ``app_api``: the module belongs to the app API (firmware/), whose public
    functions keep their parameter names; ``public``: rename the module's
    public globals too (those no board file names: the protocol's host-side
    API, which the host runs from source). Returns (source, pairs): the
    (old, new) names, and (old, None) for each module-level function or
    class dropped as unreferenced (``_drop_unreferenced``), for ``check``."""
    tree = ast.parse(source)
    taken = _all_names(tree)
    renames = _rename_globals(tree, keep, public)
    dropped = _drop_unreferenced(tree, renames)
    pairs = {(old, new) for old, new in renames.items() if old not in dropped} | set(dropped.items())
    if attrs:
        pairs |= _rename_attributes(tree, attrs)
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if app_api and not isinstance(fn, ast.Lambda) and not _is_private(fn.name):
            continue
        pairs |= set(_rename_params(fn, keep, taken).items())
    return ast.unparse(tree) + "\n", pairs

def _same_name(u, v, pairs):
    return u == v or (u, v) in pairs


# Instructions CPython emits in the sorted order of the names they carry
# (cells and closures: co_cellvars and co_freevars are sorted), so a rename
# may reorder a run of them; compared as sets.
_SORTED_OPS = ("MAKE_CELL", "LOAD_CLOSURE", "COPY_FREE_VARS")


def _runs(code):
    out = []
    for ins in dis.get_instructions(code):
        if out and ins.opname in _SORTED_OPS and out[-1][0] == ins.opname:
            out[-1][1].append(ins.argval)
        else:
            out.append((ins.opname, [ins.argval]))
    return out


def _code_pairs(a, b, pairs, where):
    for attr in ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_nlocals"):
        if getattr(a, attr) != getattr(b, attr):
            raise NamesError("%s: %s differs" % (where, attr))
    n_args = a.co_argcount + a.co_kwonlyargcount + bool(a.co_flags & 4) + bool(a.co_flags & 8)
    for u, v in zip(a.co_varnames[:n_args], b.co_varnames[:n_args]):
        if not _same_name(u, v, pairs):
            raise NamesError("%s: parameter %s became %s" % (where, u, v))
    if not _same_name(a.co_name, b.co_name, pairs):
        raise NamesError("%s: name %s became %s" % (where, a.co_name, b.co_name))
    ra, rb = _runs(a), _runs(b)
    if len(ra) != len(rb):
        raise NamesError("%s: bytecode differs" % where)
    for (op_a, args_a), (op_b, args_b) in zip(ra, rb):
        if op_a != op_b or len(args_a) != len(args_b):
            raise NamesError("%s: bytecode differs (%s, %s)" % (where, op_a, op_b))
        if op_a in _SORTED_OPS:
            left = list(args_b)
            for u in args_a:
                m = [v for v in left if _same_name(u, v, pairs)]
                if not m:
                    raise NamesError("%s: %s %s has no counterpart" % (where, op_a, u))
                left.remove(m[0])
            continue
        u, v = args_a[0], args_b[0]
        if hasattr(u, "co_code") and hasattr(v, "co_code"):
            continue                # compared below, with the constants
        if isinstance(u, str) and isinstance(v, str):
            ok = _same_name(u, v, pairs)
        else:
            ok = _same_const(u, v, pairs)
        if not ok:
            raise NamesError("%s: %s %r became %r" % (where, op_a, u, v))
    if len(a.co_consts) != len(b.co_consts):
        raise NamesError("%s: constants differ" % where)
    for u, v in zip(a.co_consts, b.co_consts):
        if hasattr(u, "co_code"):
            if not hasattr(v, "co_code"):
                raise NamesError("%s: constants differ" % where)
            _code_pairs(u, v, pairs, where + "." + u.co_name)
        elif not _same_const(u, v, pairs):
            raise NamesError("%s: constant %r became %r" % (where, u, v))


def _same_const(u, v, pairs):
    """Equal constants, or a renamed attribute's name in __slots__."""
    if type(u) is not type(v):
        return False
    if isinstance(u, tuple):
        return len(u) == len(v) and all(_same_const(x, y, pairs) for x, y in zip(u, v))
    return u == v or (u != u and v != v) or (isinstance(u, str) and (u, v) in pairs)


def check(source, renamed, pairs, filename="<board module>"):
    """Raise NamesError unless renamed is source with only the (old, new)
    pairs renamed: source printed back from its syntax tree parses to the
    same tree (nothing lost in printing), and it and renamed compile
    (CPython) to the same instructions and constants, each name the same
    or one of the pairs; a pair (old, None) names a module-level function
    or class the renamed module dropped, and is dropped from source before
    the comparison. (Source and its printed form are not compared as
    bytecode: the line layout moves CPython's NOPs.) It holds that only
    names changed, not that each name was renamed in the right scope: the
    renaming's own rules and the tests that run the build see to that."""
    tree = ast.parse(source)
    gone = {old for old, new in pairs if new is None}
    tree.body = [n for n in tree.body if not (isinstance(n, _DEFS) and n.name in gone)]
    pairs = {p for p in pairs if p[1] is not None}
    printed = ast.unparse(tree)
    if ast.dump(ast.parse(printed)) != ast.dump(tree):
        raise NamesError("%s: printing the source back changes it" % filename)
    _code_pairs(compile(printed, filename, "exec"), compile(renamed, filename, "exec"), pairs, filename)


def _read_uint(data, i):
    n = 0
    while True:
        b = data[i]
        i += 1
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n, i


def interned(mpy):
    """The names a board interns when it loads this .mpy file (bytes): the
    module's qstr table less the names every firmware has in ROM, which the
    file gives by number (MicroPython's py/persistentcode.c, load_qstr)."""
    if mpy[:1] != b"M" or len(mpy) < 4:
        raise NamesError("not a .mpy file")
    i = 4
    if mpy[2] & 0x40:      # MPY_FEATURE_ARCH_FLAGS: arch flags follow
        _, i = _read_uint(mpy, i)
    n_qstr, i = _read_uint(mpy, i)
    _, i = _read_uint(mpy, i)       # n_obj
    names = []
    for _ in range(n_qstr):
        n, i = _read_uint(mpy, i)
        if n & 1:
            continue
        n >>= 1
        names.append(mpy[i:i + n].decode())
        i += n + 1
    return names
