"""Board modules packed into a few ``.mpy`` files (bundles).

A module a board imports from ``.mpy`` costs heap of its own whatever it
holds: its module object and globals dictionary, the function that ran its
top level, its table of the names its code uses (two bytes per name, the
same name in every module that uses it), its file path and dotted name as
interned strings, a slot in its package and in ``sys.modules``, and in
every module that imports a name from it, a global for that name. The node
loads some forty modules of ``shared_protocol`` (docs/node.md, "Bundles").
The board build packs the ones that are always loaded together into one
module per group (BUNDLES), so a board pays those costs once per group;
the sources keep their small modules, and the host, the tests and the
virtual board's shared-code tests import them as they are.

A bundle is the modules' top-level statements in their order, in one
namespace: a name imported from a module of the same bundle is that
module's global itself (the import goes), ``module.name`` becomes the name,
and a global two modules bind differently (or that one binds and another
reads as a builtin) is renamed in the later one (``name_K``, K its place in
the bundle). A name a module's ``__getattr__`` answers (an error kind made
on first use, shared_protocol/errors.py) becomes a call of that function,
and so does ``getattr(module, name)`` of such a module. A module outside
the bundle imports from it instead, by the names the bundle gives (``from
shared_protocol import bundle_topics as cbor`` and ``cbor.name_K``). A
string that is exactly a bundled module's dotted name names the bundle; a
tuple of such names (firmware/preload.py's import order) names each bundle
once, where its first module stood, and no package.

What cannot be rewritten without changing what the code does is refused
(BundleError), never guessed: a bundled module used as a value (not as
``module.name``), a name the rewrite would have to rename that some
function binds locally, ``import a.b`` without ``as``, a name imported from
a package that only its ``__getattr__`` provides, ``globals()``, a store
into a name a ``__getattr__`` makes. A bundled module's ``__name__`` is its
bundle's. Modules imported by a name built at run time (the dmc package's
``__getattr__``, platform's HANDSHAKE_ONLY, runtime's BOOT_ONLY) stay
modules of their own: BUNDLES leaves them out.
"""

import ast

# name of the bundle -> its modules, each after the modules its top level
# needs (firmware/preload.py's order): shared_protocol's and the node's
# links and topics; not the rest of firmware (app, node, runtime, platform,
# core), which apps and tools import by name on a board.
BUNDLES = (
    ("shared_protocol.bundle_topics", (
        "shared_protocol.errors", "shared_protocol.dmc.errors", "shared_protocol.wire.cbor",
        "shared_protocol.dmc.ops", "shared_protocol.dmc.crdts", "shared_protocol.dmc.crdt_log",
        "shared_protocol.dmc.replica", "shared_protocol.dmc.store", "shared_protocol.crypto.ct",
        "shared_protocol.crypto.errors", "shared_protocol.crypto.hkdf", "shared_protocol.crypto.chacha20poly1305",
        "shared_protocol.crypto.field", "shared_protocol.crypto.sha512", "shared_protocol.crypto.ed25519",
        "shared_protocol.crypto.pure", "shared_protocol.crypto.api", "shared_protocol.groups.errors",
        "shared_protocol.groups.keys", "shared_protocol.wire.envelope", "shared_protocol.groups.wire",
        "shared_protocol.groups.readings", "shared_protocol.replay", "shared_protocol.groups.member",
        "shared_protocol.clock", "firmware.topic",
    )),
    ("shared_protocol.bundle_link", (
        "shared_protocol.session.messages", "shared_protocol.session.client", "shared_protocol.noise.events",
        "shared_protocol.noise.errors", "shared_protocol.noise.symmetric", "shared_protocol.noise.datagram",
        "shared_protocol.noise.udp", "shared_protocol.session.secure_client", "firmware.proxy_link",
    )),
    ("shared_protocol.bundle_lan", (
        "shared_protocol.wire.framing", "shared_protocol.dmc.sync", "shared_protocol.overlay.cyclon",
        "shared_protocol.rand", "shared_protocol.overlay.lan", "firmware.lan_link",
    )),
)
# Part of the build's cache key.
VERSION = "bundles-3"

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class BundleError(Exception):
    """A module cannot be packed as BUNDLES asks without changing what the
    code does; the message names the module and the construct."""


def _top_bindings(tree):
    """{name: [statement nodes]} a module binds at its top level (into
    if/try/for/while/with bodies, not into functions or classes)."""
    out = {}
    stack = list(tree.body)
    while stack:
        n = stack.pop()
        if isinstance(n, _DEFS):
            out.setdefault(n.name, []).append(n)
            continue
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                out.setdefault((a.asname or a.name).split(".")[0], []).append(n)
            continue
        if isinstance(n, _SCOPES):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.setdefault(n.id, []).append(n)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.setdefault(n.name, []).append(n)
        stack.extend(ast.iter_child_nodes(n))
    # a global a function makes (``global x``; x = ...) is one too
    for n in ast.walk(tree):
        if isinstance(n, ast.Global):
            for name in n.names:
                out.setdefault(name, []).append(n)
    return out


def _scope_bound(tree):
    """Names bound inside some function, lambda, class or comprehension of
    the module (parameters included) and not declared global there.
    (mpy_names._bound_in counts an import as a binding; here an import in
    a function is the module's own import, which _bind checks.)"""
    out = set()
    for s in ast.walk(tree):
        if not isinstance(s, _SCOPES):
            continue
        bound, declared = set(), set()
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = s.args
            for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
                if x is not None:
                    bound.add(x.arg)
        body = [s.body] if isinstance(s, ast.Lambda) else (
            list(s.generators) if hasattr(s, "generators") else list(s.body))
        stack = body
        while stack:
            n = stack.pop()
            if isinstance(n, _DEFS):
                bound.add(n.name)
                continue
            if isinstance(n, _SCOPES):
                continue
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                declared.update(n.names)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                bound.add(n.id)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                bound.add(n.name)
            stack.extend(ast.iter_child_nodes(n))
        out |= bound - declared
    return out


class _Module:
    def __init__(self, name, source, is_package):
        self.name = name
        self.tree = ast.parse(source, name)
        self.is_package = is_package
        self.source = source
        # names some function, class or comprehension binds (_scope_bound)
        self.locals = _scope_bound(self.tree)
        # local name -> ("mod", module) or ("name", module, name): the board
        # modules and their names this module's imports bind
        self.binds = {}

    def where(self, what):
        return "%s: %s" % (self.name, what)


def _parents(tree):
    parent = {}
    for n in ast.walk(tree):
        for c in ast.iter_child_nodes(n):
            parent[c] = n
    return parent


def pack(sources, bundles=BUNDLES):
    """sources: {dotted module name: (source text, is a package __init__)}
    of every board module. Returns {dotted name: source text} of the modules
    a board gets: the bundles' and every other module's, the latter with
    its imports of bundled modules rewritten (its own text when nothing
    changed)."""
    mods = {n: _Module(n, s, p) for n, (s, p) in sources.items()}
    bundle_of = {}
    for b, members in bundles:
        if b in mods:
            raise BundleError("bundle %s has the name of a module" % b)
        for m in members:
            if m not in mods:
                raise BundleError("bundle %s: no board module %s" % (b, m))
            if m in bundle_of:
                raise BundleError("%s is in two bundles" % m)
            if mods[m].is_package:
                raise BundleError("%s is a package: it stays a module" % m)
            bundle_of[m] = b
    for m in mods.values():
        _find_imports(m, mods)
    tops = {n: _top_bindings(m.tree) for n, m in mods.items()}
    # each bundle's global names: (module, name) -> the bundle's name for it
    gname = {}
    for b, members in bundles:
        gname.update(_bundle_names(b, members, mods, tops))
    for n in members_of(bundles):
        _check_bundled(mods[n])
    # every package of the board modules, with an __init__ or without
    packages = {n for n, x in mods.items() if x.is_package}
    for n in mods:
        parts = n.split(".")
        packages.update(".".join(parts[:i]) for i in range(1, len(parts)))
    out = {}
    for n, m in mods.items():
        changed = _rewrite(m, mods, bundle_of, gname, tops, packages)
        if n not in bundle_of:
            out[n] = ast.unparse(m.tree) + "\n" if changed else m.source
    for b, members in bundles:
        body = []
        for n in members:
            t = mods[n].tree
            stmts = t.body
            if stmts and isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant) \
                    and isinstance(stmts[0].value.value, str):
                stmts = stmts[1:]   # the docstring: a board keeps none
            body.extend(stmts)
        head = "# %s: %s\n" % (b, " ".join(members))
        out[b] = head + ast.unparse(ast.Module(body=body, type_ignores=[])) + "\n"
    return out


def members_of(bundles):
    return [m for _, members in bundles for m in members]


def _find_imports(m, mods):
    for node in ast.walk(m.tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise BundleError(m.where("relative import"))
            base = node.module
            for a in node.names:
                local = a.asname or a.name
                full = base + "." + a.name
                if full in mods:
                    _bind(m, local, ("mod", full))
                elif base in mods:
                    _bind(m, local, ("name", base, a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods:
                    if a.asname is None and "." in a.name:
                        _bind(m, a.name.split(".")[0], ("dotted", a.name))
                    else:
                        _bind(m, a.asname or a.name, ("mod", a.name))


def _bind(m, local, target):
    old = m.binds.get(local)
    if old is not None and old != target:
        raise BundleError(m.where("%s is imported as two things (%s, %s)" % (local, old, target)))
    m.binds[local] = target


def _bundle_names(b, members, mods, tops):
    """(module, name) -> its name in the bundle, for every top-level name of
    the bundle's modules. Imports of the same thing share a name; other
    names two modules bind, or that one binds and another reads as a
    builtin, are renamed in the later module."""
    member_set = set(members)
    taken = {}      # bundle name -> identity
    out = {}
    reads = {}      # names a member reads that nothing in it binds: builtins
    all_names = set()
    for n in members:
        names = {x.id for x in ast.walk(mods[n].tree) if isinstance(x, ast.Name)}
        all_names |= names | set(tops[n])
        reads[n] = names - set(tops[n]) - mods[n].locals
    for i, n in enumerate(members):
        m = mods[n]
        for name, nodes in sorted(tops[n].items()):
            target = m.binds.get(name)
            if target is not None and target[0] != "dotted":
                tmod = target[1]
                if tmod in member_set:
                    continue        # an import from the bundle itself: goes
                ident = target
            elif any(isinstance(x, (ast.Import, ast.ImportFrom)) for x in nodes):
                # an import of the firmware's (micropython's const, struct),
                # its fallback for CPython beside it: the same in every member
                ident = ("ext",) + tuple(sorted(ast.dump(x) for x in nodes
                                                if isinstance(x, (ast.Import, ast.ImportFrom))))
            else:
                ident = ("own", n)
            # a builtin another member reads (no top-level binding there)
            clash_builtin = any(name in reads[o] for o in members if o != n)
            if name in taken and taken[name] == ident and ident[0] != "own":
                out[(n, name)] = name
                continue
            if name not in taken and not clash_builtin:
                taken[name] = ident
                out[(n, name)] = name
                continue
            new = "_%s%d" % (name.strip("_"), i) if name.startswith("__") else "%s_%d" % (name, i)
            if new in all_names or new in taken:
                raise BundleError("%s: the bundle's name %s for %s is taken" % (b, new, name))
            taken[new] = ident
            out[(n, name)] = new
    return out


def _check_bundled(m):
    for x in ast.walk(m.tree):
        if isinstance(x, ast.Name) and x.id in ("globals", "__file__", "locals", "vars"):
            raise BundleError(m.where("uses %s" % x.id))
    for local, t in m.binds.items():
        if t[0] == "dotted":
            raise BundleError(m.where("import %s without 'as'" % t[1]))


def _rewrite(m, mods, bundle_of, gname, tops, packages):
    """Rewrite m's tree in place for the bundles; True if anything changed."""
    mine = bundle_of.get(m.name)
    parent = _parents(m.tree)
    shadowed = m.locals

    def bundled_name(module, name):
        key = (module, name)
        if key not in gname:
            raise BundleError(m.where("%s has no top-level name %s" % (module, name)))
        return gname[key]

    # which locals the rewrite touches, and check each is only the import
    touched = {}
    for local, t in m.binds.items():
        if t[0] == "dotted":
            if t[1] in bundle_of:
                raise BundleError(m.where("import %s without 'as' of a bundled module" % t[1]))
            continue
        if t[0] == "name" and t[1] not in bundle_of:
            tb = tops[t[1]]
            if mods[t[1]].is_package and t[2] not in tb and "__getattr__" in tb:
                # a package's __getattr__ (shared_protocol/dmc): it imports
                # the submodule by its name, which may be in a bundle
                raise BundleError(m.where("%s from %s is not a name the package binds" % (t[2], t[1])))
            continue
        if t[1] not in bundle_of:
            continue
        touched[local] = t
        if t[0] == "name" and (bundle_of[t[1]] != mine or bundled_name(t[1], t[2]) == local):
            continue        # the import is rewritten or goes; the name stays as it is
        if local in shadowed:
            raise BundleError(m.where("%s, imported from %s, is also bound in a function" % (local, t[1])))
        # only the imports bind it at the top
        for x in tops[m.name].get(local, []):
            if not isinstance(x, (ast.Import, ast.ImportFrom)):
                raise BundleError(m.where("%s, imported from %s, is bound again" % (local, t[1])))

    # own globals renamed in this module's bundle
    renames = {}
    if mine is not None:
        for name in tops[m.name]:
            if m.binds.get(name, ("",))[0] in ("mod", "name") and m.binds[name][1] in bundle_of \
                    and bundle_of[m.binds[name][1]] == mine:
                continue
            new = gname.get((m.name, name), name)
            if new != name:
                if name in shadowed:
                    raise BundleError(m.where("global %s, renamed %s in the bundle, is also bound in a function"
                                              % (name, new)))
                renames[name] = new

    changed = _rewrite_name_tuples(m, packages, bundle_of)
    globals_needed = {}     # function node -> names to declare global
    created = set()         # Name nodes made from module.name: already final
    for node in list(ast.walk(m.tree)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) == 2 and not node.keywords and isinstance(node.args[0], ast.Name) \
                and node.args[0].id in touched and touched[node.args[0].id][0] == "mod" \
                and "__getattr__" in tops[touched[node.args[0].id][1]]:
            # getattr(errors, kind) of an error family: a kind is never a
            # global of its module (shared_protocol.errors.kind keeps them
            # in the family's dict), so this is the family's __getattr__
            t = touched[node.args[0].id]
            fn = bundled_name(t[1], "__getattr__")
            if bundle_of[t[1]] == mine:
                node.func = ast.Name(id=fn, ctx=ast.Load())
            else:
                node.func = ast.Attribute(value=node.args[0], attr=fn, ctx=ast.Load())
                node.args[0].id = renames.get(node.args[0].id, node.args[0].id)
                created.add(id(node.args[0]))
            created.add(id(node.func))
            node.args = node.args[1:]
            changed = True
    for node in list(ast.walk(m.tree)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in touched:
            t = touched[node.value.id]
            if t[0] != "mod":
                continue        # an attribute of an imported name: that object's
            if isinstance(node.ctx, ast.Load) is False and bundle_of[t[1]] != mine:
                raise BundleError(m.where("assigns %s.%s of a bundled module" % (node.value.id, node.attr)))
            if node.attr not in tops[t[1]] and "__getattr__" in tops[t[1]]:
                # a name the module's __getattr__ answers (an error kind
                # made on first use): that function, called
                if not isinstance(node.ctx, ast.Load):
                    raise BundleError(m.where("assigns %s.%s, a name made by __getattr__" % (node.value.id,
                                                                                            node.attr)))
                fn = bundled_name(t[1], "__getattr__")
                if bundle_of[t[1]] == mine:
                    func = ast.Name(id=fn, ctx=ast.Load())
                    created.add(id(func))
                else:
                    func = ast.Attribute(value=node.value, attr=fn, ctx=ast.Load())
                    node.value.id = renames.get(node.value.id, node.value.id)
                created.add(id(node.value))
                _replace(parent, node, ast.Call(func=func, args=[ast.Constant(node.attr)], keywords=[]))
                changed = True
                continue
            new = bundled_name(t[1], node.attr)
            if bundle_of[t[1]] == mine:
                repl = ast.Name(id=new, ctx=node.ctx)
                _replace(parent, node, repl)
                created.add(id(repl))
                if not isinstance(node.ctx, ast.Load):
                    fn = _enclosing_function(parent, repl)
                    if fn is not None:
                        globals_needed.setdefault(fn, set()).add(new)
            else:
                node.attr = new
                node.value.id = renames.get(node.value.id, node.value.id)
                created.add(id(node.value))
            changed = True
    for node in list(ast.walk(m.tree)):
        if isinstance(node, ast.Name):
            if id(node) in created:
                continue
            if node.id in touched and (touched[node.id][0] == "mod" or bundle_of[touched[node.id][1]] == mine):
                t = touched[node.id]
                if t[0] == "mod":
                    raise BundleError(m.where("module %s is used as a value" % t[1]))
                node.id = bundled_name(t[1], t[2])
                changed = True
            elif node.id in renames:
                node.id = renames[node.id]
                changed = True
        elif isinstance(node, _DEFS) and node.name in renames and _is_top(parent, node):
            node.name = renames[node.name]
            changed = True
        elif isinstance(node, ast.Global):
            node.names = [renames.get(x, x) for x in node.names]
        elif isinstance(node, ast.alias) and (node.asname or node.name) in renames and "." not in node.name \
                and (node.asname or node.name) not in touched:
            node.asname = renames[node.asname or node.name]
            changed = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in bundle_of:
            node.value = bundle_of[node.value]
            changed = True
    for fn, names in globals_needed.items():
        fn.body.insert(0, ast.Global(names=sorted(names)))
    # the imports themselves
    for node in list(ast.walk(m.tree)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        keep, extra = [], []
        for a in node.names:
            local = (a.asname or a.name)
            t = touched.get(local)
            if t is None or (isinstance(node, ast.Import) and a.name not in mods) or \
                    (isinstance(node, ast.ImportFrom) and not _imports_target(node, a, t)):
                keep.append(a)
                continue
            changed = True
            b = bundle_of[t[1]]
            if b == mine:
                continue        # the bundle's own global now
            pkg, leaf = b.rsplit(".", 1)
            as_ = renames.get(local, local)     # the bundle's name for this module's binding
            if t[0] == "mod":
                extra.append(ast.ImportFrom(module=pkg, names=[ast.alias(name=leaf, asname=as_)], level=0))
            else:
                extra.append(ast.ImportFrom(module=b, names=[ast.alias(name=bundled_name(t[1], t[2]),
                                                                       asname=as_)], level=0))
        if len(keep) == len(node.names):
            continue
        node.names = keep
        new = ([node] if keep else []) + extra
        if not new:
            new = [ast.Pass()]
        _replace(parent, node, *new)
    return changed


def _rewrite_name_tuples(m, packages, bundle_of):
    """A tuple of strings that names a bundled module (firmware/preload.py's
    import order): each bundle once, where its first member stood, and no
    package (a board imports a package with its first module; an explicit
    import would load a package's ``__init__`` that only modules outside
    the bundles need)."""
    changed = False
    for node in ast.walk(m.tree):
        if not (isinstance(node, ast.Tuple) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)
                and any(e.value in bundle_of for e in node.elts)):
            continue
        elts, seen = [], set()
        for e in node.elts:
            v = e.value
            if v in packages:
                continue
            if v in bundle_of:
                v = bundle_of[v]
                if v in seen:
                    continue
                seen.add(v)
            elts.append(ast.Constant(v))
        node.elts = elts
        changed = True
    return changed


def _imports_target(node, a, t):
    full = node.module + "." + a.name
    if t[0] == "mod":
        return full == t[1]
    return node.module == t[1] and a.name == t[2]


def _is_top(parent, node):
    """node is in the module's own scope (no function, class or
    comprehension around it)."""
    p = parent.get(node)
    while p is not None and not isinstance(p, _SCOPES):
        p = parent.get(p)
    return p is None


def _enclosing_function(parent, node):
    p = parent.get(node)
    while p is not None:
        if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return p
        if isinstance(p, (ast.ClassDef, ast.Lambda)):
            raise BundleError("a bundled module's global is assigned in a class body or lambda")
        p = parent.get(p)
    return None


def _replace(parent, old, *new):
    """Put new in old's place in its parent: one node, or in a list of
    statements any number."""
    p = parent[old]
    for field, value in ast.iter_fields(p):
        if isinstance(value, list) and any(v is old for v in value):
            i = next(k for k, v in enumerate(value) if v is old)
            value[i:i + 1] = new
        elif value is old and len(new) == 1:
            setattr(p, field, new[0])
        else:
            continue
        for n in new:
            parent[n] = p
        return
    raise AssertionError("node not found in its parent")
