"""No service swallows a bus failure with a broad `except`: it catches bus's typed errors instead.

bus/ turns nats errors into its own (`bus.NotFound`, `bus.Conflict`, `bus.BusUnavailable`, their
base `bus.BusError`), so a service never needs `except Exception` to act on a bus answer; where one
does, an outage reads like "no such key" (a login limit that fails open).

The rule, checked on the source of every module under services/: a `try` whose body awaits a bus
call may not have a handler for `Exception`, `BaseException` or everything (bare `except:`), and a
`with contextlib.suppress(Exception)` may not wrap one — unless that handler ends by raising (cleanup
then re-raise, or translation into another error, is not control flow). A bus call is an awaited
call whose callee is reached through
- the `bus` package or a name imported from it (`bus.append_event(...)`, `Delivery`),
- the conventional handles `js`, `nc` and `bus` (`self.bus.js.publish(...)`, `request.app[BUS].js`),
- an attribute declared in a class body with a bus type (`delivery: Delivery` → `reply.delivery.nak()`),
- a name bound in the function to one of the above, or a parameter annotated with a bus type
  (`kv = bus.KV(js, ...)`, `presence: bus.KV`).
So a genuine guard whose body calls no bus directly stays allowed: a model template that may fail to
render (`await loop.run_in_executor(...)`), a request handler's catch-all that hands the work back
(`await self._serve(...)`), the HTTP error middleware (`await handler(request)`).
`TOLERATED` names the few remaining sites by function, each with its reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parent.parent
BROAD = {"Exception", "BaseException"}
CONVENTIONAL_HANDLES = {"js", "nc", "bus"}

# Qualified function name -> why its broad handler around a bus call stays for now.
TOLERATED: dict[str, str] = {}


@dataclass
class _Module:
    bus_names: set[str]  # `bus` and the names imported from it
    bus_attrs: set[str]  # attributes that hold bus objects
    found: list[str] = field(default_factory=list)


def _parts(expr: ast.expr) -> tuple[set[str], set[str]]:
    """The names and attribute names along a callee or value expression (`a.b(c).d` -> {a}, {b, d})."""
    names: set[str] = set()
    attrs: set[str] = set()
    while True:
        if isinstance(expr, ast.Attribute):
            attrs.add(expr.attr)
            expr = expr.value
        elif isinstance(expr, ast.Call):
            expr = expr.func
        elif isinstance(expr, ast.Subscript | ast.Await):
            expr = expr.value
        elif isinstance(expr, ast.Name):
            names.add(expr.id)
            return names, attrs
        else:
            return names, attrs


def _refers_to_bus(expr: ast.expr | None, module: _Module, handles: set[str]) -> bool:
    if expr is None:
        return False
    names, attrs = _parts(expr)
    return bool(names & (module.bus_names | handles | CONVENTIONAL_HANDLES) or attrs & module.bus_attrs)


def _mentions(annotation: ast.expr | None, module: _Module) -> bool:
    """Whether a type annotation names a bus type (`bus.KV`, `Delivery`, `"bus.Bus | None"`)."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    return any(isinstance(n, ast.Name) and n.id in module.bus_names for n in ast.walk(annotation))


def _awaits_bus(body: list[ast.stmt], module: _Module, handles: set[str]) -> bool:
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
                if _refers_to_bus(node.value.func, module, handles):
                    return True
    return False


def _broad(expr: ast.expr | None) -> bool:
    if expr is None:
        return True
    if isinstance(expr, ast.Tuple):
        return any(_broad(e) for e in expr.elts)
    return isinstance(expr, ast.Name) and expr.id in BROAD


def _suppresses_broadly(item: ast.withitem) -> bool:
    call = item.context_expr
    if not isinstance(call, ast.Call):
        return False
    names, attrs = _parts(call.func)
    return "suppress" in names | attrs and any(_broad(arg) for arg in call.args)


def _own_nodes(fn: ast.AST) -> list[ast.AST]:
    """The nodes of a function's own body, not those of the functions and classes it defines."""
    found: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        found.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return found


def _check_function(
    fn: ast.AsyncFunctionDef | ast.FunctionDef, qualname: str, module: _Module, outer: set[str]
) -> None:
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    handles = set(outer) | {a.arg for a in args if _mentions(a.annotation, module)}
    nodes = _own_nodes(fn)
    for node in sorted(nodes, key=lambda n: getattr(n, "lineno", 0)):  # bindings in source order
        if isinstance(node, ast.Assign) and _refers_to_bus(node.value, module, handles):
            handles.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if _mentions(node.annotation, module) or _refers_to_bus(node.value, module, handles):
                handles.add(node.target.id)
    if qualname not in TOLERATED:
        for node in nodes:
            if isinstance(node, ast.Try | ast.TryStar) and _awaits_bus(node.body, module, handles):
                for handler in node.handlers:
                    if _broad(handler.type) and not isinstance(handler.body[-1], ast.Raise):
                        module.found.append(f"{qualname}, line {handler.lineno}")
            elif isinstance(node, ast.With | ast.AsyncWith) and any(
                _suppresses_broadly(i) for i in node.items
            ):
                if _awaits_bus(node.body, module, handles):
                    module.found.append(f"{qualname}, line {node.lineno}")
    _walk(fn, f"{qualname}.", module, handles)


def _walk(node: ast.AST, prefix: str, module: _Module, handles: set[str]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            _check_function(child, f"{prefix}{child.name}", module, handles)
        elif isinstance(child, ast.ClassDef):
            _walk(child, f"{prefix}{child.name}.", module, handles)
        elif not isinstance(child, ast.Lambda):
            _walk(child, prefix, module, handles)


def broad_handlers_around_bus_calls(source: str) -> list[str]:
    """Where a module catches everything around a bus call: `function, line n` for each."""
    tree = ast.parse(source)
    bus_names = {"bus"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bus":
            bus_names.update(alias.asname or alias.name for alias in node.names)
    module = _Module(bus_names=bus_names, bus_attrs=set(CONVENTIONAL_HANDLES))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if _mentions(stmt.annotation, module):
                        module.bus_attrs.add(stmt.target.id)
    _walk(tree, "", module, set())
    return sorted(module.found)


def test_no_service_catches_everything_around_a_bus_call() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): found
        for package in ("logtools", "identity", "services")  # the libraries serve the services
        for path in sorted((ROOT / package).rglob("*.py"))
        if (found := broad_handlers_around_bus_calls(path.read_text()))
    }
    assert not offenders, f"catch bus.BusError (or NotFound, Conflict, BusUnavailable) instead: {offenders}"


_FLAGGED = """
import contextlib
import bus
from bus import Delivery

class Reply:
    delivery: Delivery

async def count(js: bus.JetStream) -> int:
    try:
        entry = await bus.KV(js, "login_attempts").get("k")
    except Exception:
        return 0
    return int(entry.value)

async def beat(presence: bus.KV) -> None:
    try:
        await presence.put("k", b"")
    except:
        pass

async def leave(nbus: bus.Bus) -> None:
    kv = bus.KV(nbus.js, "workers")
    with contextlib.suppress(Exception):
        await kv.delete("k")

async def keep(reply: Reply) -> None:
    try:
        await reply.delivery.in_progress()
    except (ValueError, BaseException):
        pass

async def raw(self) -> None:
    try:
        await self.bus.js.publish("s", b"")
    except Exception as exc:
        print(exc)
"""

_ALLOWED = """
import contextlib
import bus

async def count(js: bus.JetStream) -> int:
    try:
        entry = await bus.KV(js, "login_attempts").get("k")
    except bus.NotFound:
        return 0
    return int(entry.value)

async def start(feed) -> None:
    try:
        await bus.read_all(feed.js, "CHAT", [">"])
    except BaseException:
        await feed.stop()
        raise

async def render(loop, engine) -> str:
    try:
        return await loop.run_in_executor(None, engine.build_prompt)
    except Exception as exc:
        return str(exc)

async def leave(kv: bus.KV) -> None:
    with contextlib.suppress(bus.BusError):
        await kv.delete("k")
"""


def test_the_rule_finds_what_it_should_and_only_that() -> None:
    assert broad_handlers_around_bus_calls(_FLAGGED) == [
        "beat, line 19",
        "count, line 12",
        "keep, line 30",
        "leave, line 24",
        "raw, line 36",
    ]
    assert broad_handlers_around_bus_calls(_ALLOWED) == []
