"""The fused rejection kernel (C), compiled on first use and loaded with ctypes.

``run_fused`` runs the whole SGD optimisation of the loss-rejection protocol for one candidate
in one native call (see ``rejection_kernel.c``). Where no C compiler is available (or
``ALZ_NATIVE=0``), ``library()`` is ``None`` and the caller uses the operator-at-a-time engine.

The library is built with the system's ``cc`` into ``~/.cache/alz/native``, keyed by the
source, the flags and the CPU it is built for (:func:`cpu_signature`), once per kind of machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ...graph.evaluate import CompiledGraph
from ...graph.loss_graph import LossGraph

_SOURCE = Path(__file__).with_name("rejection_kernel.c")
_OPCODES = {name: i for i, name in enumerate(
    ("add", "mul", "neg", "abs", "inv", "log", "exp", "tanh", "square", "sqrt", "mean_c",
     "mean_nhw", "maxpool", "minpool"))}
_YHAT, _STATIC, _CONST, _NODE = 0, 1, 2, 3
_MAX_SLOTS = 64
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_unavailable: str | None = None


class _Instr(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int32), ("a_kind", ctypes.c_int32), ("a_index", ctypes.c_int32),
                ("b_kind", ctypes.c_int32), ("b_index", ctypes.c_int32)]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alz" / "native"


def cpu_signature(cc: str | None = None) -> str:
    """What ``-march=native`` builds for on this machine: the architecture, the CPU model and
    its instruction-set flags (``/proc/cpuinfo``), and the compiler's version. The cache key
    holds it, so a home directory shared by nodes with other CPUs never hands one node a
    library built for another (SIGILL, or verdicts that differ between nodes)."""
    import platform

    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and line not in parts:
                    parts.append(line.strip())
                if key == "flags":
                    break  # the first processor's lines are enough
    except OSError:
        parts.append(platform.processor())
    if cc is not None:
        try:
            parts.append(subprocess.run([cc, "--version"], capture_output=True, text=True,
                                        timeout=30).stdout.splitlines()[0])
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return "\n".join(parts)


#: compile flags of the kernel (see _build)
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fPIC"]


def library_path(cc: str | None, signature: str | None = None) -> Path:
    """Where the kernel built by ``cc`` for this CPU (or ``signature``) is cached."""
    sig = cpu_signature(cc) if signature is None else signature
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode()
                         + sig.encode()).hexdigest()[:16]
    return _cache_dir() / f"rejection_kernel_{key}.so"


def _build() -> ctypes.CDLL:
    # -ffast-math for vectorised libm calls, but keep NaN/inf semantics (non-finite values are
    # a verdict of the protocol). Compile and link separately: linking with -ffast-math adds
    # crtfastmath, which switches the whole process to flush-to-zero when the library loads,
    # changing torch's arithmetic too.
    flags = _FLAGS
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    target = library_path(cc)
    if not target.exists():
        if cc is None:
            raise OSError("no C compiler (cc/gcc) on PATH")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out, obj = Path(tmp) / target.name, Path(tmp) / "kernel.o"
            subprocess.run([cc, *flags, "-c", "-o", str(obj), str(_SOURCE)], check=True,
                           capture_output=True)
            subprocess.run([cc, "-shared", "-o", str(out), str(obj), "-lmvec", "-lm"],
                           check=True, capture_output=True)
            os.replace(out, target)  # atomic: concurrent builders do not see half a file
    lib = ctypes.CDLL(str(target))
    fn = lib.alz_reject_run
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                   ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                   ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_int,
                   ctypes.POINTER(ctypes.c_int)]
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel, building it if needed; ``None`` if it cannot be built here."""
    global _lib, _unavailable
    if _lib is not None or _unavailable is not None:
        return _lib
    with _lock:
        if _lib is None and _unavailable is None:
            if os.environ.get("ALZ_NATIVE", "1") == "0":
                _unavailable = "disabled by ALZ_NATIVE=0"
            else:
                try:
                    _lib = _build()
                except (OSError, subprocess.CalledProcessError) as exc:
                    _unavailable = f"native rejection kernel unavailable: {exc}"
    return _lib


class FusedProgram:
    """A graph lowered for the kernel: static arrays (target-only values), constants, program."""

    def __init__(self, program: list[_Instr], statics: list[torch.Tensor],
                 consts: list[float], mode: int) -> None:
        self.mode = mode  # 0 per-pixel blocks, 1 one image per block (pooling), 2 whole tensor
        self.program = (_Instr * len(program))(*program)
        self.n_instr = len(program)
        self.statics = statics
        self.static_ptrs = (ctypes.c_void_p * max(1, len(statics)))(
            *[t.data_ptr() for t in statics])
        self.consts = (ctypes.c_float * max(1, len(consts)))(*consts)


def lower(graph: LossGraph, y: torch.Tensor) -> FusedProgram | None:
    """Lower ``graph`` for targets ``y`` (N, C, H, W); ``None`` if the kernel cannot run it."""
    dyn = [False] * len(graph.nodes)
    for i, n in enumerate(graph.nodes):
        dyn[i] = (n.op == "input" and n.leaf == "yhat") or any(dyn[a] for a in n.args)
        if dyn[i] and n.op not in _OPCODES and n.op != "input":
            return None
    if not dyn[-1]:
        return None
    # values of target-only nodes used by dynamic ones, channels-last
    static_nodes = {a for i, n in enumerate(graph.nodes) if dyn[i] for a in n.args if not dyn[a]}
    evaluated = CompiledGraph(graph)._run({"y": y}, y, {}, sorted(
        i for i in range(len(graph.nodes)) if not dyn[i]), keep_all=True)
    statics: list[torch.Tensor] = []
    consts: list[float] = []
    slot: dict[int, tuple[int, int]] = {}
    for i in sorted(static_nodes):
        v = evaluated[i]
        if v.dim() == 0:
            slot[i] = (_CONST, len(consts))
            consts.append(float(v))
        else:
            slot[i] = (_STATIC, len(statics))
            statics.append(v.expand(y.shape).permute(0, 2, 3, 1).contiguous())
    program: list[_Instr] = []
    for i, n in enumerate(graph.nodes):
        if not dyn[i]:
            continue
        if n.op == "input":
            slot[i] = (_YHAT, 0)
            continue
        a = slot[n.args[0]]
        b = slot[n.args[1]] if len(n.args) > 1 else (0, 0)
        slot[i] = (_NODE, len(program))
        program.append(_Instr(_OPCODES[n.op], a[0], a[1], b[0], b[1]))
    if not program or len(program) > _MAX_SLOTS:
        return None
    dyn_ops = {graph.nodes[i].op for i in range(len(graph.nodes)) if dyn[i]}
    mode = 2 if "mean_nhw" in dyn_ops else 1 if dyn_ops & {"maxpool", "minpool"} else 0
    return FusedProgram(program, statics, consts, mode)


def run_fused(prog: FusedProgram, init_logits: torch.Tensor, iterations: int, lr: float,
              momentum: float) -> tuple[torch.Tensor, int, int]:
    """Run the SGD loop natively. Returns (final logits (N, H, W, C), iterations run, status)
    with status 0 completed, 1 non-finite, 2 zero gradient at the start."""
    lib = library()
    assert lib is not None
    # a copy even when the permuted view is already contiguous (H = W = 1 or C = 1): the kernel
    # writes into z, and the caller's initial logits must stay as they are
    z = init_logits.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)
    buf = torch.zeros_like(z)
    n, h, w, c = z.shape
    status = ctypes.c_int(0)
    if n * h * w * c >= 2**31:
        raise ValueError(f"logits of shape {tuple(init_logits.shape)} are too large for the "
                         "kernel's 32-bit indices")
    ran = lib.alz_reject_run(z.data_ptr(), buf.data_ptr(), n, h, w, c, prog.static_ptrs,
                             prog.consts, prog.program, prog.n_instr, iterations, lr, momentum,
                             prog.mode, ctypes.byref(status))
    return z, ran, status.value
