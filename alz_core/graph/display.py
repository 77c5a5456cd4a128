"""Human forms of a loss graph for display: a sympy expression, simplified text and LaTeX.

These forms are for reading only. They drop the eps of the protected operators (as the paper's
Table 9 does) and are never parsed back; the canonical text is the stored form.

sympy's simplification has no time bound of its own, so it runs in a worker process that is
killed after :data:`SIMPLIFY_SECONDS` (the command line, the web app's server and the report
all come through here); past it the forms fall back to the unsimplified ones, the text with a
note.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import sympy as sp

from .expr import Expr
from .loss_graph import LossGraph

_SYMBOLS = {
    # probabilities / heatmaps: the prediction is positive, the target non-negative
    "yhat": sp.Symbol(r"\hat{y}", positive=True),
    "y": sp.Symbol("y", nonnegative=True),
    "i": sp.Symbol("i", positive=True),
    "u": sp.Symbol("u", positive=True),
    "e": sp.Symbol("e", positive=True),
}
_PLAIN_NAMES = {r"\hat{y}": "yhat"}

_FUNCS = {
    "mean_nhw": sp.Function("Mean_nhw"),
    "mean_c": sp.Function("Mean_c"),
    "maxpool": sp.Function("MaxPool"),
    "minpool": sp.Function("MinPool"),
}
_LATEX_FUNCS = {
    "Mean_nhw": r"\operatorname{Mean}_{nhw}",
    "Mean_c": r"\operatorname{Mean}_{c}",
    "MaxPool": r"\operatorname{MaxPool}",
    "MinPool": r"\operatorname{MinPool}",
}


def to_sympy(expr: Expr | LossGraph) -> sp.Expr:
    """The sympy expression of a graph (protected operators shown in their plain form)."""
    if isinstance(expr, LossGraph):
        expr = expr.expr
    memo: dict[Expr, sp.Expr] = {}

    def conv(e: Expr) -> sp.Expr:
        if e in memo:
            return memo[e]
        if e.op == "input":
            out = _SYMBOLS[str(e.leaf)]
        elif e.op == "const":
            v = float(e.leaf)  # type: ignore[arg-type]
            out = sp.Integer(int(v)) if v.is_integer() else sp.nsimplify(v, rational=False)
        else:
            a = [conv(x) for x in e.args]
            op = e.op
            if op == "add":
                out = a[0] + a[1]
            elif op == "mul":
                out = a[0] * a[1]
            elif op == "neg":
                out = -a[0]
            elif op == "abs":
                out = sp.Abs(a[0])
            elif op == "inv":
                out = 1 / a[0]
            elif op == "log":
                out = sp.log(a[0])
            elif op == "exp":
                out = sp.exp(a[0])
            elif op == "tanh":
                out = sp.tanh(a[0])
            elif op == "square":
                out = a[0] ** 2
            elif op == "sqrt":
                out = sp.sqrt(a[0])
            else:
                out = _FUNCS[op](a[0])
        memo[e] = out
        return out

    return conv(expr)


#: The longest sympy may work on one graph's simplified form (seconds; ``ALZ_SIMPLIFY_SECONDS``
#: overrides it). ``simplify()`` has no bound of its own: ``tanh(y+yhat)^16 + tanh(y-yhat)^16``
#: takes it seconds, some larger forms minutes. Past the bound the display falls back to the
#: unsimplified form with a note (:data:`NOT_SIMPLIFIED`).
SIMPLIFY_SECONDS = 5.0

#: What :func:`simplified_text` appends to the canonical text when sympy ran out of time.
NOT_SIMPLIFIED = "(not simplified: sympy took more than {seconds:g} s)"


def _simplify(e: sp.Expr, size: int) -> sp.Expr:
    try:
        # simplify() can be slow on large trees; the search keeps graphs small, and the
        # cheaper passes are enough to remove most redundancy when it is not.
        return sp.simplify(e) if size <= 24 else sp.powsimp(sp.cancel(e))
    except Exception:  # sympy may give up on exotic nestings; the plain form is still right
        return e


def _plain_text(e: sp.Expr) -> str:
    text = sp.sstr(e)
    for latex_name, plain in _PLAIN_NAMES.items():
        text = text.replace(latex_name, plain)
    return text


def _latex_text(e: sp.Expr) -> str:
    text = sp.latex(e)
    for name, latex in _LATEX_FUNCS.items():
        # sympy may already wrap the name in \operatorname{}: unwrap first, so it is wrapped once
        text = text.replace(r"\operatorname{" + name + "}", name).replace(name, latex)
    return text


def _forms(graph: LossGraph, send) -> None:  # noqa: ANN001 - send(message)
    """The work bounded by :data:`SIMPLIFY_SECONDS`: first the unsimplified LaTeX (the
    fallback), then the simplified text and LaTeX."""
    try:
        e = to_sympy(graph)
        send(("plain", _latex_text(e)))
        s = _simplify(e, graph.size)
        send(("done", _plain_text(s), _latex_text(s)))
    except Exception as exc:  # noqa: BLE001 - the caller falls back to the canonical text
        send(("error", f"{type(exc).__name__}: {exc}"))


def _serve(conn) -> None:  # noqa: ANN001 - a multiprocessing Connection
    """The sympy worker's loop: one graph in, :func:`_forms`'s messages out, until EOF."""
    while True:
        try:
            graph = conn.recv()
        except (EOFError, OSError):
            return
        _forms(graph, conn.send)


class _Worker:
    """One forked process that simplifies graphs one at a time (its sympy cache stays warm
    between calls); killed, and replaced at the next call, when a graph takes too long."""

    def __init__(self) -> None:
        import multiprocessing as mp
        import os

        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True,
                                name="alz-simplify")
        self.proc.start()  # OSError, or AssertionError in a daemonic process
        child.close()
        self.pid = os.getpid()

    def run(self, graph: LossGraph, deadline: float) -> tuple[list[tuple], bool]:
        """The messages that came before ``deadline``, and whether the worker is still
        usable."""
        import time

        messages: list[tuple] = []
        try:
            self.conn.send(graph)
            while not messages or messages[-1][0] == "plain":
                left = deadline - time.monotonic()
                if left <= 0 or not self.conn.poll(left):
                    return messages, False
                messages.append(self.conn.recv())
        except (EOFError, OSError):
            return messages, False
        return messages, True

    def close(self) -> None:
        import os

        if os.getpid() != self.pid:
            return  # a forked copy of this module: the process is not this one's child
        self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _bounded(graph: LossGraph, seconds: float) -> list[tuple]:
    """The messages of :func:`_forms` that came within ``seconds``.

    In the sympy worker process where the platform has ``fork`` (killed at the deadline:
    nothing keeps running, in the CLI or in the web app's server), else in a daemon thread
    (left to finish on its own)."""
    import multiprocessing as mp
    import os
    import time

    global _worker
    deadline = time.monotonic() + seconds
    if "fork" in mp.get_all_start_methods():
        if not _worker_lock.acquire(timeout=max(seconds, 0.001)):
            return []  # other threads' graphs took the time
        try:
            if _worker is not None and _worker.pid != os.getpid():
                _worker = None  # inherited through a fork: not ours to use
            if _worker is None:
                try:
                    _worker = _Worker()
                except (OSError, AssertionError):
                    _worker = None
            if _worker is not None:
                messages, usable = _worker.run(graph, deadline)
                if not usable:
                    _worker.close()
                    _worker = None
                return messages
        finally:
            _worker_lock.release()
    import queue

    q: queue.Queue = queue.Queue()
    threading.Thread(target=_forms, args=(graph, q.put), daemon=True,
                     name="alz-simplify").start()
    messages: list[tuple] = []
    while not messages or messages[-1][0] == "plain":
        try:
            messages.append(q.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
    return messages


def _limit() -> float:
    import os

    raw = os.environ.get("ALZ_SIMPLIFY_SECONDS", "").strip()
    try:
        value = float(raw) if raw else SIMPLIFY_SECONDS
    except ValueError:
        value = SIMPLIFY_SECONDS
    return value if value > 0 and value < float("inf") else SIMPLIFY_SECONDS


@lru_cache(maxsize=4096)
def _shown(graph: LossGraph, seconds: float) -> tuple[str, str]:
    """(simplified text, simplified LaTeX) of ``graph``, each falling back to the unsimplified
    form when sympy takes more than ``seconds``."""
    messages = _bounded(graph, seconds)
    done = [m for m in messages if m[0] == "done"]
    if done:
        return done[0][1], done[0][2]
    plain = [m for m in messages if m[0] == "plain"]
    if plain:
        latex = plain[0][1]
    else:  # not even the unsimplified sympy form came in time: the canonical text
        latex = r"\texttt{" + graph.text.replace("_", r"\_").replace(
            "^", r"\textasciicircum{}") + "}"
    if any(m[0] == "error" for m in messages):
        return graph.text, latex
    return f"{graph.text}  {NOT_SIMPLIFIED.format(seconds=seconds)}", latex


def simplified_text(graph: LossGraph) -> str:
    """A simplified, human-readable formula (not guaranteed to parse back); the canonical text
    and a note when sympy needs more than :data:`SIMPLIFY_SECONDS`."""
    return _shown(graph, _limit())[0]


def to_latex(graph: LossGraph, simplify: bool = True) -> str:
    """LaTeX of the graph, simplified by default (unsimplified when sympy needs more than
    :data:`SIMPLIFY_SECONDS`)."""
    if simplify:
        return _shown(graph, _limit())[1]
    return _latex_text(to_sympy(graph))
