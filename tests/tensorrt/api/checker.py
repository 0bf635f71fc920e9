"""Static check: every TensorRT name endoedge touches exists in each TensorRT line that reaches it.

Lines: 8.6, 10.x (checked against 10.13), 11.x (checked against 11.4) and TensorRT for RTX
(``rtx1.7``: ``TrtVersion(1, 7, rtx=True)``, table from ``dir()`` of the real 1.7.1 wheel); the name
tables are ``names_<line>.txt`` beside this file (see ``regen.py`` for how each is derived). A
checker given fewer tables checks only those lines.

A module is checked when it imports TensorRT through ``import_tensorrt()`` (from
``endoedge.tensorrt.compat``), ``import tensorrt`` or ``importlib.import_module("tensorrt")``, or when a
function takes the module as a parameter named ``trt``. Collected (AST only, nothing is imported):

a. attribute chains rooted at a TensorRT module name (bound from ``import_tensorrt()``,
   ``import tensorrt as X``, or a parameter called ``trt``): ``trt.BuilderFlag.FP16`` needs
   ``BuilderFlag`` and ``BuilderFlag.FP16`` in the line; further links are checked as members;
b. every other attribute access (``config.set_flag``, ``engine.num_io_tensors``), loads and
   stores: the name counts as a TensorRT name when it is a class member in any line's table,
   and then must be a member of some class in each line that reaches it. Receivers known not to
   be TensorRT objects are skipped: other imported modules and names, parameters annotated with
   a type that does not mention ``trt``/``tensorrt``/``Any`` or a TensorRT class, names only ever
   assigned from literals or from calls/attributes of imported non-TensorRT names
   (``plan = make_plan(...)``, ``p = Path(x)``), and ``self.x`` when the class assigns
   ``self.x`` itself or defines ``x``;
c. ``class C(trt.X)`` (or ``class C(base)`` after ``base = trt.X``): the base is a chain (a), and each method that overrides a member of
   ``X`` in some line must be a member of ``X`` in every line where ``X`` exists and the class
   is reached.

Version guards narrow the set of lines that reach the code under them:

* ``if <cond>:`` / ``else:`` (the else branch gets the negation), ``a if <cond> else b``, and
  short-circuit ``<cond> and x`` / ``<cond> or x``;
* an ``if <cond>:`` whose body ends in ``return``/``raise`` (or ``continue``/``break`` in a
  loop) narrows the rest of the block to the negation (early exit);
* ``<cond>`` is any mix of ``and``/``or``/``not`` over: a ``TrtVersion`` property
  (``ver.has_precision_flags`` ...; evaluated on ``TrtVersion(8, 6)``, ``(10, 13)``,
  ``(11, 4)``), comparisons of ``ver``, ``ver.major``/``ver.minor``, tuples of them, and
  ``TrtVersion(...)``; ``hasattr(trt.X, "Y")``, ``hasattr(trt, "X")`` and
  ``hasattr(obj, "name")`` (true in the lines whose table has the name). ``ver`` is any name
  assigned from ``trt_version(...)``/``TrtVersion...``, a parameter annotated ``TrtVersion``,
  or an attribute/name spelled ``ver``, ``_ver``, ``version``, ``trt_version``, ``_trt_version``;
  other conditions do not narrow;
* a function (or module) whose docstring has a line ``TensorRT lines: 10.x, 11.x`` (any of
  ``8.6``, ``10.x``, ``11.x``, ``rtx``) or that carries a ``# trt-lines: 10, 11`` comment on or right
  above its ``def`` line is only reached by those lines;
* ``getattr(obj, "name", default)`` is not an access (a default covers a missing name).

A line ending in ``# trt-api: ignore`` is skipped (for an attribute that merely shares a name
with a TensorRT member; say why next to it).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINES: tuple[str, ...] = ("8.6", "10.13", "11.4", "rtx1.7")
ALL = frozenset(LINES)
LINE_VERSIONS: dict[str, tuple[int, int, int, bool]] = {
    "8.6": (8, 6, 0, False), "10.13": (10, 13, 0, False), "11.4": (11, 4, 0, False), "rtx1.7": (1, 7, 0, True)}
VERSION_NAMES = {"ver", "_ver", "version", "trt_version", "_trt_version", "trt_ver", "_version"}
_LINES_DOC = re.compile(r"^\s*TensorRT lines?:\s*(.+?)\s*$", re.MULTILINE)
_LINES_COMMENT = re.compile(r"#\s*trt-lines:\s*(.+?)\s*$")
_IGNORE = re.compile(r"#\s*trt-api:\s*ignore\b")


@dataclass(frozen=True)
class Table:
    """One line's names: module level, ``Class -> members``, and every member name."""

    top: frozenset[str]
    classes: dict[str, frozenset[str]]
    members: frozenset[str]

    def has(self, entry: str) -> bool:
        if "." not in entry:
            return entry in self.top
        cls, _, mem = entry.rpartition(".")
        return mem in self.classes.get(cls, frozenset())


def load_table(path: Path) -> Table:
    """Read a ``names_<line>.txt`` file."""
    top: set[str] = set()
    classes: dict[str, set[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        if "." in entry:
            cls, _, mem = entry.rpartition(".")
            classes.setdefault(cls, set()).add(mem)
        else:
            top.add(entry)
    frozen = {k: frozenset(v) for k, v in classes.items()}
    members = frozenset(m for v in frozen.values() for m in v)
    return Table(frozenset(top), frozen, members)


def load_tables(folder: Path = HERE) -> dict[str, Table]:
    """The committed tables (8.6, 10.13, 11.4, rtx1.7)."""
    return {line: load_table(folder / f"names_{line}.txt") for line in LINES}


@dataclass(frozen=True, order=True)
class Violation:
    """``path:lineno name, missing in line X``."""

    path: str
    lineno: int
    name: str
    line: str
    why: str = ""

    def __str__(self) -> str:
        extra = f" ({self.why})" if self.why else ""
        return f"{self.path}:{self.lineno} {self.name}, missing in line {self.line}{extra}"


def parse_lines(text: str) -> frozenset[str]:
    """``"8.6, 10.x, 11"`` -> the matching table lines."""
    out = set()
    for part in re.split(r"[,\s]+", text.strip()):
        p = part.strip().rstrip(".").lower().replace(".x", "")
        for line in LINES:
            if p and (line == p or line.split(".")[0] == p or (line.startswith("rtx") and p.startswith("rtx"))):
                out.add(line)
    return frozenset(out)


def _version_props() -> dict[str, frozenset[str]]:
    from endoedge.tensorrt.compat import TrtVersion

    out = {}
    for name, value in vars(TrtVersion).items():
        if isinstance(value, property):
            out[name] = frozenset(ln for ln in LINES if getattr(TrtVersion(*LINE_VERSIONS[ln]), name))
    return out


@dataclass
class _Scope:
    trt_names: set[str] = field(default_factory=set)
    ver_names: set[str] = field(default_factory=set)
    not_trt: set[str] = field(default_factory=set)
    trt_classes: dict[str, str] = field(default_factory=dict)  # alias -> TensorRT class (base = trt.X)


class ModuleChecker(ast.NodeVisitor):
    """Walks one module, collecting violations against the tables."""

    def __init__(self, path: str, source: str, tables: dict[str, Table]) -> None:
        self.path = path
        self.source_lines = source.splitlines()
        self.tables = tables
        self.union_members = frozenset().union(*(t.members for t in tables.values()))
        self.union_top = frozenset().union(*(t.top for t in tables.values()))
        self.props = _version_props()
        self.violations: set[Violation] = set()
        self.uses: list[tuple[int, str, frozenset[str]]] = []  # (lineno, name, lines reaching it)
        self.member_uses: list[tuple[int, str, frozenset[str]]] = []  # the (b) part of ``uses``
        self.modules: set[str] = set()  # names bound to non-TensorRT modules
        self.scope = _Scope()
        self.reach: frozenset[str] = frozenset(ln for ln in LINES if ln in tables)
        self.class_self: list[set[str]] = []  # per enclosing class: attribute names it defines
        self.in_loop = False
        self.tree = ast.parse(source)
        self.all = frozenset(ln for ln in LINES if ln in tables)  # the lines this checker checks
        self.props = {k: v & self.all for k, v in self.props.items()}

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> list[Violation]:
        doc = ast.get_docstring(self.tree)
        reach = self.all
        if doc and _LINES_DOC.search(doc):
            reach = self.all & parse_lines(_LINES_DOC.search(doc).group(1))  # type: ignore[union-attr]
        self._prescan(self.tree.body, self.scope)
        self._block(self.tree.body, reach)
        return sorted(self.violations)

    def _prescan(self, body: Iterable[ast.stmt], scope: _Scope) -> None:
        """Bind names in this scope: TensorRT module, version objects, plain values, modules."""
        literal: set[str] = set()
        other: set[str] = set()
        for sub in _walk_scope(body):
            if isinstance(sub, ast.Import):
                    for a in sub.names:
                        bound = a.asname or a.name.split(".")[0]
                        (scope.trt_names if a.name in ("tensorrt", "tensorrt_lean") else self.modules).add(bound)
            elif isinstance(sub, ast.ImportFrom):
                mod = sub.module or ""
                for a in sub.names:
                    bound = a.asname or a.name
                    if mod not in ("tensorrt", "tensorrt_lean") and bound not in (
                        "import_tensorrt", "trt_version", "TrtVersion"
                    ):
                        self.modules.add(bound)
            elif isinstance(sub, (ast.Assign, ast.AnnAssign)) and sub.value is not None:
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        kind = self._bind(t.id, sub.value, scope)
                        (literal if kind == "literal" else other).add(t.id)
            elif isinstance(sub, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith, ast.NamedExpr)):
                other.update(n.id for n in ast.walk(sub) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
        scope.not_trt |= literal - other

    def _bind(self, name: str, value: ast.expr, scope: _Scope) -> str:
        if isinstance(value, ast.Call):
            fn = value.func
            fname = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if fname == "import_tensorrt" or (fname == "import_module" and _imports_trt_by_name(value)):
                scope.trt_names.add(name)
                return "trt"
            if fname in ("trt_version", "TrtVersion") or (fname == "parse" and _root(fn) == "TrtVersion"):
                scope.ver_names.add(name)
                return "ver"
        chain = _chain(value) if isinstance(value, ast.Attribute) else None
        if chain and len(chain) == 2 and chain[0] in scope.trt_names:
            scope.trt_classes[name] = chain[1]
            return "other"
        literals = (ast.Constant, ast.JoinedStr, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.ListComp,
                    ast.DictComp, ast.SetComp)
        if isinstance(value, literals):
            return "literal"
        if isinstance(value, (ast.Call, ast.Attribute, ast.Subscript)) and _root(value) in self.modules:
            return "literal"  # from an imported non-TensorRT module or callable: Path(...), np.zeros(...)
        return "other"

    # -- reachability ---------------------------------------------------------------------
    def _block(self, body: list[ast.stmt], reach: frozenset[str]) -> frozenset[str]:
        for stmt in body:
            if not reach:
                return reach
            reach = self._stmt(stmt, reach)
        return reach

    def _stmt(self, stmt: ast.stmt, reach: frozenset[str]) -> frozenset[str]:
        if isinstance(stmt, ast.If):
            yes, no = self._cond(stmt.test, reach)
            t_reach = self._block(stmt.body, reach & yes)
            e_reach = self._block(stmt.orelse, reach & no) if stmt.orelse else reach & no
            return t_reach | e_reach  # a branch ending in return/raise gives the empty set
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._function(stmt, reach)
            return reach
        if isinstance(stmt, ast.ClassDef):
            self._class(stmt, reach)
            return reach
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            head = stmt.iter if isinstance(stmt, (ast.For, ast.AsyncFor)) else stmt.test
            self._expr(head, reach)
            if isinstance(stmt, (ast.For, ast.AsyncFor)):
                self._expr(stmt.target, reach)
            outer, self.in_loop = self.in_loop, True
            self._block(stmt.body, reach)
            self.in_loop = outer
            self._block(stmt.orelse, reach)
            return reach
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self._expr(item.context_expr, reach)
                if item.optional_vars is not None:
                    self._expr(item.optional_vars, reach)
            return self._block(stmt.body, reach)
        if isinstance(stmt, ast.Try):
            self._block(stmt.body, reach)
            for h in stmt.handlers:
                self._block(h.body, reach)
            self._block(stmt.orelse, reach)
            self._block(stmt.finalbody, reach)
            return reach
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.expr):
                self._expr(child, reach)
            elif isinstance(child, ast.stmt):  # try* bodies and the like
                self._stmt(child, reach)
            elif isinstance(child, (ast.match_case, ast.ExceptHandler)):
                if isinstance(child, ast.match_case) and child.guard is not None:
                    self._expr(child.guard, reach)
                self._block(child.body, reach)
        if isinstance(stmt, (ast.Return, ast.Raise)) or (self.in_loop and isinstance(stmt, (ast.Continue, ast.Break))):
            return frozenset()  # early exit: the rest of this block is not reached
        return reach

    def _function(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, reach: frozenset[str]) -> None:
        doc = ast.get_docstring(fn)
        if doc and _LINES_DOC.search(doc):
            reach = reach & parse_lines(_LINES_DOC.search(doc).group(1))  # type: ignore[union-attr]
        for ln in (fn.lineno, fn.lineno - 1 - len(fn.decorator_list)):
            text = self.source_lines[ln - 1] if 0 < ln <= len(self.source_lines) else ""
            m = _LINES_COMMENT.search(text)
            if m:
                reach = reach & parse_lines(m.group(1))
        for d in fn.decorator_list:
            self._expr(d, reach)
        outer = self.scope
        scope = _Scope(set(outer.trt_names), set(outer.ver_names), set(outer.not_trt), dict(outer.trt_classes))
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        for a in args:
            ann = ast.unparse(a.annotation) if a.annotation is not None else ""
            scope.not_trt.discard(a.arg)
            scope.ver_names.discard(a.arg)
            if a.arg == "trt" and "TrtVersion" not in ann:
                scope.trt_names.add(a.arg)
            elif "TrtVersion" in ann:
                scope.ver_names.add(a.arg)
            elif ann and not re.search(r"\btrt\b|tensorrt|\bAny\b|\bobject\b", ann) and not (
                set(re.findall(r"\w+", ann)) & self.union_top
            ):
                scope.not_trt.add(a.arg)
        self.scope = scope
        self._prescan(fn.body, scope)
        outer_loop, self.in_loop = self.in_loop, False
        self._block(fn.body, reach)
        self.in_loop = outer_loop
        self.scope = outer

    def _class(self, cls: ast.ClassDef, reach: frozenset[str]) -> None:
        for d in cls.decorator_list:
            self._expr(d, reach)
        trt_bases = []
        for b in cls.bases:
            self._expr(b, reach)
            if isinstance(b, ast.Attribute) and isinstance(b.value, ast.Name) and b.value.id in self.scope.trt_names:
                trt_bases.append(b.attr)
            elif isinstance(b, ast.Name) and b.id in self.scope.trt_classes:
                trt_bases.append(self.scope.trt_classes[b.id])
        defined = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for n in ast.walk(cls):
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and _root(n) == "self":
                defined.add(n.attr)
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                defined.add(n.target.id)
        for base in trt_bases:
            for fn in cls.body:
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and not fn.name.startswith("_"):
                    self._override(base, fn, reach)
        self.class_self.append(set() if trt_bases else defined)
        self._block(cls.body, reach)
        self.class_self.pop()

    def _override(self, base: str, fn: ast.FunctionDef | ast.AsyncFunctionDef, reach: frozenset[str]) -> None:
        if not any(fn.name in t.classes.get(base, ()) for t in self.tables.values()):
            return  # a helper method, not an override
        if self._ignored(fn.lineno):
            return
        for line in sorted(reach):
            table = self.tables[line]
            if base in table.top and fn.name not in table.classes.get(base, ()):
                self.violations.add(Violation(self.path, fn.lineno, f"{base}.{fn.name}", line, "override"))

    # -- conditions -----------------------------------------------------------------------
    def _cond(self, node: ast.expr, reach: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
        """Lines where ``node`` may be true and may be false (checking the names it uses)."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yes, no = self._cond(node.operand, reach)
            return no, yes
        if isinstance(node, ast.BoolOp):
            yes_all, no_all = (self.all, frozenset()) if isinstance(node.op, ast.And) else (frozenset(), self.all)
            cur = reach
            for v in node.values:
                yes, no = self._cond(v, cur)
                if isinstance(node.op, ast.And):
                    yes_all, no_all, cur = yes_all & yes, no_all | no, cur & yes
                else:
                    yes_all, no_all, cur = yes_all | yes, no_all & no, cur & no
            return yes_all, no_all
        known = self._guard(node)
        if known is None:
            self._expr(node, reach)
            return self.all, self.all
        self._expr(node, reach)
        return known, self.all - known

    def _guard(self, node: ast.expr) -> frozenset[str] | None:
        """The lines where a recognised version guard is true, or ``None``."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr":
            if len(node.args) == 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                return self._has(node.args[0], node.args[1].value)
            return None
        if isinstance(node, ast.Attribute) and self._is_ver(node.value) and node.attr in self.props:
            return self.props[node.attr]
        if isinstance(node, ast.Compare) and self._only_versions(node):
            return self._eval_versions(node)
        return None

    def _has(self, obj: ast.expr, name: str) -> frozenset[str]:
        chain = _chain(obj)
        if chain and chain[0] in self.scope.trt_names:
            entry = ".".join([*chain[1:], name])
            return frozenset(ln for ln in self.all if self.tables[ln].has(entry))
        return frozenset(ln for ln in self.all if name in self.tables[ln].members or name in self.tables[ln].top)

    def _is_ver(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.scope.ver_names or (node.id in VERSION_NAMES and node.id not in self.scope.not_trt)
        if isinstance(node, ast.Attribute):
            return node.attr in VERSION_NAMES
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id == "trt_version"
        return False

    def _only_versions(self, node: ast.expr) -> bool:
        found = False
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and self._is_ver(sub.value) and sub.attr in ("major", "minor", "patch") or isinstance(sub, (ast.Name, ast.Attribute, ast.Call)) and self._is_ver(sub):
                found = True
        if not found:
            return False
        allowed = (ast.Compare, ast.Tuple, ast.Constant, ast.Load, ast.cmpop, ast.Attribute, ast.Name, ast.Call)
        for sub in ast.walk(node):
            if not isinstance(sub, allowed):
                return False
            if isinstance(sub, ast.Call) and not (
                isinstance(sub.func, ast.Name) and sub.func.id in ("TrtVersion", "trt_version")
            ):
                return False
        return True

    def _eval_versions(self, node: ast.expr) -> frozenset[str] | None:
        from endoedge.tensorrt.compat import TrtVersion

        class _Sub(ast.NodeTransformer):
            def __init__(self, checker: ModuleChecker) -> None:
                self.checker = checker

            def visit_Call(self, n: ast.Call) -> ast.AST:
                if isinstance(n.func, ast.Name) and n.func.id == "trt_version":
                    return ast.copy_location(ast.Name("__v", ast.Load()), n)
                return self.generic_visit(n)

            def visit_Name(self, n: ast.Name) -> ast.AST:
                return ast.copy_location(ast.Name("__v", ast.Load()), n) if self.checker._is_ver(n) else n

            def visit_Attribute(self, n: ast.Attribute) -> ast.AST:
                if self.checker._is_ver(n):
                    return ast.copy_location(ast.Name("__v", ast.Load()), n)
                return self.generic_visit(n)

        expr = ast.Expression(_Sub(self).visit(ast.parse(ast.unparse(node), mode="eval").body))
        ast.fix_missing_locations(expr)
        code = compile(expr, "<guard>", "eval")
        out = set()
        for line in sorted(self.all):
            try:
                if eval(code, {"__builtins__": {}, "TrtVersion": TrtVersion}, {"__v": TrtVersion(*LINE_VERSIONS[line])}):
                    out.add(line)
            except Exception:  # noqa: BLE001 - not a guard we understand
                return None
        return frozenset(out)

    # -- expressions ----------------------------------------------------------------------
    def _expr(self, node: ast.expr, reach: frozenset[str]) -> None:
        if not reach:
            return
        if isinstance(node, ast.IfExp):
            yes, no = self._cond(node.test, reach)
            self._expr(node.body, reach & yes)
            self._expr(node.orelse, reach & no)
            return
        if isinstance(node, ast.BoolOp):
            self._cond(node, reach)
            return
        if isinstance(node, ast.Lambda):
            self._expr(node.body, reach)
            return
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in ("getattr", "hasattr") and len(node.args) >= 2:
                self._expr(node.args[0], reach)
                name = node.args[1]
                if fn.id == "getattr" and len(node.args) == 2 and isinstance(name, ast.Constant) and isinstance(name.value, str):
                    self._attr_use(node.args[0], name.value, node.lineno, reach)
                for extra in node.args[2:]:
                    self._expr(extra, reach)
                return
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in self.scope.trt_names:
                self._trt_chain(chain, node.lineno, reach)
                return
            self._attr_use(node.value, node.attr, node.lineno, reach)
            self._expr(node.value, reach)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(child, reach)
            elif isinstance(child, ast.comprehension):
                self._expr(child.iter, reach)
                self._expr(child.target, reach)
                for cond in child.ifs:
                    self._expr(cond, reach)
            elif isinstance(child, ast.keyword):
                self._expr(child.value, reach)

    def _trt_chain(self, chain: list[str], lineno: int, reach: frozenset[str]) -> None:
        if self._ignored(lineno):
            return
        dunder = next((i for i, c in enumerate(chain) if c.startswith("__")), len(chain))
        chain = chain[:dunder]  # ``trt.X.__init__``: only ``X`` is a TensorRT name
        if len(chain) < 2:
            return
        entries = [chain[1]]
        if len(chain) >= 3:
            entries.append(f"{chain[1]}.{chain[2]}")
        name = ".".join(chain[1:])
        self.uses.append((lineno, name, reach))
        for line in sorted(reach):
            table = self.tables[line]
            missing = [e for e in entries if not table.has(e)]
            missing += [m for m in chain[3:] if m not in table.members]
            if missing:
                self.violations.add(Violation(self.path, lineno, "trt." + name, line))

    def _attr_use(self, receiver: ast.expr, attr: str, lineno: int, reach: frozenset[str]) -> None:
        if attr.startswith("__") or attr not in self.union_members or self._ignored(lineno):
            return
        if self._is_ver(receiver) or isinstance(receiver, (ast.Constant, ast.JoinedStr)):
            return
        root = _root(receiver)
        if root is not None and (root in self.modules or root in self.scope.not_trt or root in self.scope.ver_names):
            return
        if isinstance(receiver, ast.Name) and receiver.id == "self" and self.class_self and attr in self.class_self[-1]:
            return
        self.uses.append((lineno, attr, reach))
        self.member_uses.append((lineno, attr, reach))
        for line in sorted(reach):
            if attr not in self.tables[line].members:
                self.violations.add(Violation(self.path, lineno, attr, line))

    def _ignored(self, lineno: int) -> bool:
        text = self.source_lines[lineno - 1] if 0 < lineno <= len(self.source_lines) else ""
        return bool(_IGNORE.search(text))


def _imports_trt_by_name(call: ast.Call) -> bool:
    """``importlib.import_module("tensorrt")`` (how ``endoedge.tensorrt.compat`` itself imports it)."""
    arg = call.args[0] if call.args else None
    return isinstance(arg, ast.Constant) and arg.value in ("tensorrt", "tensorrt_lean")


def _walk_scope(body: Iterable[ast.stmt]) -> Iterable[ast.AST]:
    """Every node of a block, not descending into nested functions, lambdas and classes."""
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                todo.append(child)


def _chain(node: ast.expr) -> list[str] | None:
    """``a.b.c`` -> ``["a", "b", "c"]``; ``None`` when the root is not a plain name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def uses_tensorrt(source: str) -> bool:
    """Whether a module uses TensorRT: ``import_tensorrt()``, ``import tensorrt``, or a ``trt`` parameter."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            if any(a.arg == "trt" for a in args):
                return True
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if name == "import_tensorrt" or (name == "import_module" and _imports_trt_by_name(node)):
                return True
        elif isinstance(node, ast.Import) and any(a.name in ("tensorrt", "tensorrt_lean") for a in node.names):
            return True
    return False


def check_source(source: str, path: str = "<src>", tables: dict[str, Table] | None = None) -> list[Violation]:
    """Violations in one module's source."""
    return ModuleChecker(path, source, tables or load_tables()).run()


def check_tree(root: Path, tables: dict[str, Table] | None = None) -> tuple[list[Path], list[Violation]]:
    """Check every TensorRT-using module under ``root``: (modules checked, violations)."""
    tables = tables or load_tables()
    checked: list[Path] = []
    found: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if not uses_tensorrt(source):
            continue
        checked.append(path)
        found.extend(check_source(source, str(path), tables))
    return checked, found


if __name__ == "__main__":  # pragma: no cover
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "src" / "endoedge"
    mods, bad = check_tree(target)
    for v in bad:
        print(v)
    print(f"{len(mods)} TensorRT module(s) checked, {len(bad)} violation(s)")
    sys.exit(1 if bad else 0)
