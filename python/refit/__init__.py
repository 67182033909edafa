"""refit: move a trainer's freshly trained weights into running inference engines.

A plan (compiled ahead of time into librefit.so, see ./configure --plans) fixes every byte of an
update. A trainer rank binds the tensors it holds (FSDP2 shards, by name) and pushes versions; a
receiver binds its engine's tensors and learns when a version is complete.

    plan = refit.Plan("qwen3_tiny_tp2")
    rx = refit.Receiver(plan, plan.receiver_index(replica=0, tp_rank=0), token=SECRET)
    rx.bind(engine_tensors)                 # dict name (or alias) -> tensor, as the engine holds them
    port = rx.listen("0.0.0.0")
    rx.arm(version)                         # the engine stopped reading its weights
    state = rx.wait(version)                # raises refit.TornError with the reason

    tr = refit.Trainer(plan, mesh=mesh, token=SECRET, mem="cuda")
    tr.bind_module(model)                   # FSDP2 shards by name; gathered tensors get buffers
    tr.connect(receiver, host, port)        # for each receiver in tr.receivers
    tr.refresh_gathered(); tr.push(version); skipped = tr.wait()

Tensors are PyTorch tensors or any object with __array_interface__ (numpy; ml_dtypes for bfloat16
and float8_e4m3fn), __cuda_array_interface__ or __dlpack__. torch is imported only when a tensor,
mesh or module of it is given. Every tensor a receiver or trainer binds is checked against the
plan: dtype, shape, strides (row-major, or a derived view's in its storage), the FSDP shard, the
device. refit.vllm binds a vLLM worker's parameters.
"""
import difflib
import re
import sys
from collections import namedtuple

from . import _refit
from ._refit import BindError, Error, TimeoutError, TornError

__all__ = ["Plan", "Trainer", "Receiver", "TensorInfo", "VersionState", "Error", "BindError", "TornError",
           "TimeoutError", "plans", "ABI_VERSION"]

ABI_VERSION = _refit.ABI_VERSION
_SRC, _DST, _DERIVED = _refit.SIDE_SRC, _refit.SIDE_DST, _refit.SIDE_DERIVED
_DTYPE = {1: "bfloat16", 2: "float32", 3: "float8_e4m3fn", 4: "int32"}
_DTYPE_ID = {name: i for i, name in _DTYPE.items()}
_TRAVEL = {0: None, 1: "expert", 2: "shard", 3: "gather"}
_SIDE = {_SRC: "source", _DST: "destination", _DERIVED: "derived"}
_MEM = {"host": _refit.MEM_HOST, "cuda": _refit.MEM_CUDA}
# DLPack {code, bits} by the dtype names numpy, ml_dtypes and torch share
_DL = {"bool": (6, 8), "int8": (0, 8), "int16": (0, 16), "int32": (0, 32), "int64": (0, 64), "uint8": (1, 8),
       "uint16": (1, 16), "uint32": (1, 32), "uint64": (1, 64), "float16": (2, 16), "float32": (2, 32),
       "float64": (2, 64), "bfloat16": (4, 16), "float8_e4m3fn": (10, 8), "float8_e5m2": (12, 8)}
_CPU, _CUDA = 1, 2


def plans():
    """Names of the plans this librefit.so carries."""
    return _refit.plans()


VersionState = namedtuple("VersionState", "complete torn armed refused torn_reason")
VersionState.__doc__ = ("A receiver's versions: newest complete, newest torn (0: none), armed and not yet complete "
                        "(0: none), connections refused so far, why the newest torn one tore.")


class TensorInfo(namedtuple("TensorInfo", "name id side dtype shape row0 rows bytes travel owner stride aliases pad_rows "
                                           "offset storage view_of")):
    """One tensor of a plan as one rank binds it.

    shape is the whole tensor (a source as the trainer's module holds it, a destination as the engine
    holds it, padding rows included); the rank binds dim-0 indices [row0, row0 + rows) of it with
    strides `stride` (elements): bind_shape. bytes 0: it binds nothing. travel ('shard', 'gather';
    None for receivers' tensors) and owner (the FSDP shard that binds a gathered tensor whole) say how
    a source travels. Destinations: aliases (other names of the same engine tensor), pad_rows
    (trailing rows of dim 0 never written). Derived views (side 3, MLA's W_UK_T / W_UV): offset
    (elements into their storage), storage (the id of the storage's first view, which binds it; None
    for a view of a destination tensor) and view_of (that destination's id)."""
    __slots__ = ()

    @property
    def bind_shape(self):
        return (self.rows,) + tuple(self.shape[1:])

    def empty(self, device=None):
        """A new uninitialised contiguous tensor of bind_shape and dtype: numpy (with ml_dtypes for
        bfloat16 and float8_e4m3fn) when device is None, else torch on that device."""
        if device is not None:
            torch = _torch()
            return torch.empty(self.bind_shape, dtype=getattr(torch, self.dtype), device=device)
        np = _numpy()
        return np.empty(self.bind_shape, dtype=_np_dtype(self.dtype))


def _numpy(module="numpy"):
    """numpy (or ml_dtypes) for host tensors, or an ImportError that says what needs it and how to
    get it (refit itself imports neither: a CUDA-only user need not have them)"""
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"refit: host tensors (Plan.engine_tensors, TensorInfo.empty without device=) are numpy "
                          f"arrays, bfloat16 and float8_e4m3fn ones from ml_dtypes, and {module} cannot be imported "
                          f"({e}): pip install numpy ml_dtypes (or pip install '.[numpy]' from refit's source tree), "
                          f"or pass device= for torch tensors", name=module) from e


def _np_dtype(name):
    np = _numpy()
    if name in ("float32", "int32"):
        return np.dtype(name)
    return np.dtype(getattr(_numpy("ml_dtypes"), name))


def _itemsize(dtype):
    """bytes per element of a plan dtype by name (rf_dtype_size)"""
    return _refit.dtype_size(_DTYPE_ID[dtype])


def _flat(n, dtype, device):
    """n uninitialised elements: numpy, or torch on device"""
    if device is not None:
        torch = _torch()
        return torch.empty(n, dtype=getattr(torch, dtype), device=device)
    np = _numpy()
    return np.empty(n, dtype=_np_dtype(dtype))


def _view(base, info):
    """info's strided view (shape, stride, offset in elements) of base's memory (base offset 0)"""
    import numpy as np
    if not isinstance(base, np.ndarray):
        return base.as_strided(info.shape, info.stride, info.offset)
    size = base.dtype.itemsize
    return np.ndarray(info.shape, base.dtype, buffer=base, offset=info.offset * size,
                      strides=tuple(s * size for s in info.stride))


def _info(t):
    (name, id_, side, dtype, shape, row0, rows, nbytes, travel, owner, stride, aliases, pad_rows, offset, storage,
     view_of) = t
    return TensorInfo(name, id_, side, _DTYPE.get(dtype, str(dtype)), shape, row0, rows, nbytes, _TRAVEL[travel], owner,
                      stride, tuple(aliases.split(",")) if aliases else (), pad_rows, offset, storage, view_of)


def _torch():
    try:
        import torch
    except ImportError as e:  # only reached when a torch feature is asked for
        raise Error(f"this needs PyTorch: {e}") from e
    return torch


def _unknown(plan, what, name, names):
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; close: {', '.join(repr(c) for c in close)}" if close else ""
    return BindError(f"plan '{plan.name}' has no {what} tensor '{name}'{hint}")


class Plan:
    """One plan of librefit.so: its numbers (fsdp, dp_replicate, trainers, tp, ep, replicas,
    receivers, layout_hash, total_bytes, ...) and its tensors by name."""

    def __init__(self, name):
        self._p = name._p if isinstance(name, Plan) else _refit.Plan(name)
        self._own = {}
        for k, v in self._p.attrs().items():
            setattr(self, k, v)

    def __repr__(self):
        return (f"Plan({self.name!r}: {self.model}, trainers {self.dp_replicate}x{self.fsdp}, "
                f"{self.replicas} replica(s) of tp {self.tp} ep {self.ep})")

    # ---- tensors ----
    def sources(self, rank):
        """{name: TensorInfo} of every source trainer rank binds."""
        return {t[0]: _info(t) for t in self._p.list(_SRC, rank)}

    def destinations(self, receiver):
        """{name: TensorInfo} of every tensor receiver binds: its destination tensors, then the
        derived tensors it rebuilds after each version (side _DERIVED, e.g. MLA's W_UK_T)."""
        out = {t[0]: _info(t) for t in self._p.list(_DST, receiver)}
        out.update({t[0]: _info(t) for t in self._p.list(_DERIVED, receiver)})
        return out

    def source(self, name, rank=0):
        """TensorInfo of source `name` as trainer rank binds it (bytes 0: it binds nothing of it).
        A Megatron plan has one source per holder under the same name (decoder.layers.0.* on every
        stage): the one this rank binds."""
        own = self._own.get(rank)
        if own is None:  # a rank's sources by name, listed once (bind calls this per tensor)
            own = self._own[rank] = {t[0]: t for t in self._p.list(_SRC, rank)}
        if name in own:
            return _info(own[name])
        i = self._p.find(_SRC, 0, name)
        if i is None:
            raise _unknown(self, "source", name, [self._p.describe(_SRC, 0, k)[0] for k in range(self.n_src)])
        return _info(self._p.describe(_SRC, rank, i))

    def finalize_steps(self, receiver):
        """Receiver `receiver`'s finalize steps in the order it runs them: [(step name, dst name,
        'kernel' | 'engine')] (the plan's generated finalize table; DESIGN.md 5d)."""
        return [(n, d, "kernel" if k == 1 else "engine") for n, d, k in self._p.finalize(receiver)]

    def destination(self, name, receiver=0):
        """TensorInfo of destination or derived tensor `name` of receiver."""
        for side in (_DST, _DERIVED):
            i = self._p.find(side, receiver, name)
            if i is not None:
                return _info(self._p.describe(side, receiver, i))
        names = [n for i in self.destinations(receiver).values() for n in (i.name,) + i.aliases]
        raise _unknown(self, f"receiver {receiver}", name, names)

    def engine_tensors(self, receiver, device=None):
        """Fresh tensors laid out as the plan's engine holds them on `receiver`, standing in for an
        engine in tests and demos: {name: tensor} with every destination under its name and its
        aliases (one tensor), and every derived view at its strides and offset in its storage (a new
        one for a storage refit rebuilds, the destination's own memory for a view of it). numpy
        (ml_dtypes) when device is None, else torch on that device."""
        infos = self.destinations(receiver)
        out, by_id, storages = {}, {}, {}
        for i in infos.values():
            if i.side == _DST:
                t = by_id[i.id] = i.empty(device)
                out.update((n, t) for n in (i.name,) + i.aliases)
        first = {i.id: i for i in infos.values() if i.side == _DERIVED and i.bytes}
        for i in infos.values():
            if i.side != _DERIVED:
                continue
            if i.view_of is not None:
                base = by_id[i.view_of]
            elif i.storage in storages:
                base = storages[i.storage]
            else:
                n = first[i.storage].bytes // _itemsize(i.dtype)
                base = storages[i.storage] = _flat(n, i.dtype, device)
            out[i.name] = _view(base, i)
        return out

    # ---- ranks ----
    def trainer_rank(self, shard=None, replicate=0, mesh=None):
        """The trainer rank of FSDP shard `shard` in replicate group `replicate`
        (rank = replicate * fsdp + shard), or of this process in a torch DeviceMesh: 1-D (shard) or
        HSDP 2-D (replicate, shard), whose sizes must be the plan's dp_replicate x fsdp."""
        if mesh is not None:
            if mesh.ndim == 1:
                replicate, shard, sizes = 0, mesh.get_local_rank(0), (1, mesh.size(0))
            elif mesh.ndim == 2:
                replicate, shard, sizes = mesh.get_local_rank(0), mesh.get_local_rank(1), (mesh.size(0), mesh.size(1))
            else:
                raise Error(f"a {mesh.ndim}-D mesh: refit takes a 1-D (shard) or 2-D HSDP (replicate, shard) mesh")
            if sizes != (self.dp_replicate, self.fsdp):
                raise Error(f"mesh is {sizes[0]} x {sizes[1]} (replicate x shard), plan '{self.name}' is "
                            f"{self.dp_replicate} x {self.fsdp} (dp_replicate x fsdp)")
        if shard is None:
            raise Error("trainer_rank needs shard= (and replicate=) or mesh=")
        if not (0 <= shard < self.fsdp and 0 <= replicate < self.dp_replicate):
            raise Error(f"shard {shard} / replicate {replicate} outside plan '{self.name}' "
                        f"(fsdp {self.fsdp}, dp_replicate {self.dp_replicate})")
        rank = replicate * self.fsdp + shard
        if self._p.trainer(rank)[:2] != (shard, replicate):
            raise Error(f"plan '{self.name}': trainer rank {rank} is not shard {shard} of replicate group {replicate}")
        return rank

    def megatron_rank(self):
        """This process's trainer rank from megatron.core.parallel_state, numbered as Megatron
        numbers global ranks by default (order tp-cp-ep-dp-pp, context parallel 1): pipeline stage
        first, then the data-parallel rank, then the TP rank: pp * (trainers / PP) + dp * TP + tp.
        The expert grid (expert-TP, EP, expert-DP ranks) must give the same rank within the stage."""
        from megatron.core import parallel_state as ps
        tp, tps = ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()
        pp, pps = ps.get_pipeline_model_parallel_rank(), ps.get_pipeline_model_parallel_world_size()
        dp = ps.get_data_parallel_rank()
        per_stage, cp = self.trainers // pps, ps.get_context_parallel_world_size()
        if cp != 1 or self.trainers % pps or per_stage % tps:
            raise Error(f"Megatron parallel state TP {tps} PP {pps} CP {cp} does not divide plan '{self.name}' "
                        f"({self.trainers} trainer ranks)")
        within = dp * tps + tp
        etp, etps = ps.get_expert_tensor_parallel_rank(), ps.get_expert_tensor_parallel_world_size()
        ep, eps = ps.get_expert_model_parallel_rank(), ps.get_expert_model_parallel_world_size()
        edp = ps.get_expert_data_parallel_rank()
        if (edp * eps + ep) * etps + etp != within:
            raise Error(f"Megatron expert rank order: expert-TP {etp}/{etps}, EP {ep}/{eps}, expert-DP {edp} is not "
                        f"rank {within} of its stage (TP {tp}/{tps}, DP {dp}): refit numbers ranks in the default "
                        f"order tp-cp-ep-dp-pp")
        if within >= per_stage:
            raise Error(f"Megatron rank {within} of stage {pp} is past plan '{self.name}' ({per_stage} trainer "
                        f"ranks per stage): the world is larger than the plan's trainers")
        return pp * per_stage + within

    def receiver_index(self, replica=0, tp_rank=0, ep_rank=None):
        """The receiver index of one engine GPU: replica * size + position, size = max(tp, ep) GPUs
        per replica. Position is the TP rank; with data-parallel attention (ep > tp) it is the EP
        rank, whose TP rank is ep_rank % tp."""
        size = self.receivers // self.replicas
        if not 0 <= replica < self.replicas:
            raise Error(f"replica {replica} outside plan '{self.name}' ({self.replicas} replicas)")
        if self.ep > self.tp:
            if ep_rank is None or not 0 <= ep_rank < self.ep or ep_rank % self.tp != tp_rank % self.tp:
                raise Error(f"plan '{self.name}' has ep {self.ep} > tp {self.tp}: give ep_rank (0..{self.ep - 1}) "
                            f"with tp_rank = ep_rank % {self.tp} (got tp_rank {tp_rank}, ep_rank {ep_rank})")
            pos = ep_rank
        else:
            if not 0 <= tp_rank < self.tp or (ep_rank is not None and self.ep > 1 and ep_rank != tp_rank):
                raise Error(f"tp_rank {tp_rank} / ep_rank {ep_rank} outside plan '{self.name}' (tp {self.tp}, "
                            f"ep {self.ep}: the EP rank equals the TP rank)")
            pos = tp_rank
        r = replica * size + pos
        if self._p.receiver(r)[:2] != (replica, pos):
            raise Error(f"plan '{self.name}': receiver {r} is not position {pos} of replica {replica}")
        return r

    def receivers_of(self, rank):
        """Receiver indices trainer rank writes to."""
        return [r for r in range(self.receivers) if any(q[0] == rank for q in self._p.receiver(r)[3])]

    def trainers_of(self, receiver):
        """Trainer ranks that write to receiver."""
        return [q[0] for q in self._p.receiver(receiver)[3]]

    def check(self, name, tensor, *, rank=None, receiver=None, mem="host", device=0, row0=None):
        """Check a tensor against the table without an engine (as bind would): give rank= for a
        source, receiver= for a destination or derived tensor. Raises BindError with the reason."""
        if (rank is None) == (receiver is None):
            raise Error("check needs exactly one of rank= (source) or receiver= (destination)")
        if rank is not None:
            info, role, who = self.source(name, rank), _refit.TRAINER, rank
        else:
            info, role, who = self.destination(name, receiver), _refit.RECEIVER, receiver
        try:
            desc, _ = _describe(tensor, row0)
        except BindError as e:
            raise BindError(f"tensor '{info.name}': {e}") from None
        self._p.check(role, who, _MEM[mem], device, info.side, info.id, desc)


# ---------------------------------------------------------------------------------------------
# tensors as (data, device_type, device_id, dtype code, bits, lanes, shape, strides, row0, readonly, offset)

def _is_dtensor(x):
    return type(x).__name__ == "DTensor" and hasattr(x, "to_local")


def _dtype_dl(name):
    try:
        return _DL[name]
    except KeyError:
        raise BindError(f"dtype {name} is not one refit knows (bfloat16, float32, float8_e4m3fn)") from None


def _np_root(x):
    """the numpy array whose memory x views (x itself when it owns its memory)"""
    import numpy as np
    while isinstance(getattr(x, "base", None), np.ndarray):
        x = x.base
    return x


def _storage(x):
    """(base address, bytes) of the storage x lies in, or None when x does not say: torch's
    untyped_storage() (or an object with that method), else the numpy array x views."""
    st = getattr(x, "untyped_storage", None)
    if callable(st):
        st = st()
        return st.data_ptr(), st.nbytes()
    if type(x).__module__ == "numpy" and hasattr(x, "__array_interface__"):
        r = _np_root(x)
        return r.__array_interface__["data"][0], r.nbytes
    return None


def _offset(x, ptr, itemsize):
    """elements from the start of x's storage to its first element; -1 when unknown"""
    off = getattr(x, "storage_offset", None)
    if callable(off):
        return int(off())
    st = _storage(x)
    return -1 if st is None or (ptr - st[0]) % itemsize else (ptr - st[0]) // itemsize


def _from_interface(x, ai, dtype_name, device_type, device_id, row0):
    ptr, readonly = ai["data"]
    shape = tuple(int(s) for s in ai["shape"])
    ts = ai["typestr"]
    itemsize = int(ts[2:])
    if dtype_name is None:  # no .dtype: the type string ('<f4', '|u1', ...)
        kind = {"f": "float", "i": "int", "u": "uint", "b": "bool"}.get(ts[1])
        dtype_name = "bool" if kind == "bool" else f"{kind}{8 * itemsize}" if kind else ts
    code, bits = _dtype_dl(dtype_name)
    strides = ai.get("strides")
    if strides is not None:  # bytes -> elements; a stride between elements is never row-major
        strides = tuple(s // itemsize if s % itemsize == 0 else -1 for s in strides)
    ptr = int(ptr or 0)
    return (ptr, device_type, device_id, code, bits, 1, shape, strides, -1 if row0 is None else row0, bool(readonly),
            _offset(x, ptr, itemsize))


def _describe(x, row0=None):
    """(description tuple, object to keep alive while the engine lives) of tensor x."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if _is_dtensor(x):
            local, off, _ = _dtensor_local(x, "a DTensor")  # raises "a DTensor: ..."
            return _describe(local, off if row0 is None else row0)
        dev = x.device
        code, bits = _dtype_dl(str(x.dtype).replace("torch.", ""))
        return ((x.data_ptr(), _CUDA if dev.type == "cuda" else _CPU if dev.type == "cpu" else 0,
                 dev.index or 0, code, bits, 1, tuple(x.shape), tuple(x.stride()),
                 -1 if row0 is None else row0, False, x.storage_offset()), x)
    ai = getattr(x, "__array_interface__", None)
    if ai is not None:
        dt = getattr(getattr(x, "dtype", None), "name", None)
        return _from_interface(x, ai, dt if dt in _DL else None, _CPU, 0, row0), x
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:  # the interface names no device: checked when the object says (CuPy: .device.id)
        dev = getattr(getattr(x, "device", None), "id", None)
        dt = getattr(getattr(x, "dtype", None), "name", None)
        return _from_interface(x, cai, dt if dt in _DL else None, 0 if dev is None else _CUDA, dev or 0, row0), x
    if hasattr(x, "__dlpack__"):
        cap = x.__dlpack__()
        d = _refit.dlpack(cap)
        return d[:8] + (-1 if row0 is None else row0, d[8], -1), (x, cap)
    raise BindError(f"a {type(x).__name__} is not a tensor refit can bind (torch.Tensor, or an object with "
                    f"__array_interface__, __cuda_array_interface__ or __dlpack__)")


def _what(d):
    """a description in a message: address, shape, strides"""
    return f"at {d[0]:#x}, shape {list(d[6])}" + ("" if d[7] is None else f", strides {list(d[7])}")


def _same(a, b):
    """two descriptions of one tensor: same memory, dtype, shape and strides (None: row-major)"""
    def strides(d):
        if d[7] is not None:
            return tuple(s for s, n in zip(d[7], d[6]) if n != 1)
        st, acc = [], 1
        for n in reversed(d[6]):
            st.append(acc)
            acc *= n
        return tuple(s for s, n in zip(reversed(st), d[6]) if n != 1)
    return a[:5] == b[:5] and a[6] == b[6] and strides(a) == strides(b)


def _dtensor_local(t, name):
    """(local tensor, dim-0 offset of it, mesh dim it is sharded over or None) of a DTensor that
    FSDP2 shards on dim 0 (HSDP: replicated over the other mesh dim)."""
    shard_dims = [i for i, p in enumerate(t.placements) if p.is_shard()]
    if not shard_dims:
        return t.to_local(), 0, None
    if len(shard_dims) > 1 or getattr(t.placements[shard_dims[0]], "dim", None) != 0 or \
            type(t.placements[shard_dims[0]]).__name__ != "Shard":
        raise BindError(f"{name}: DTensor placements {tuple(t.placements)}: refit binds FSDP2 dim-0 shards "
                        f"(Shard(0) over one mesh dim, Replicate over the others)")
    d = shard_dims[0]
    n, c, rows = t.device_mesh.size(d), t.device_mesh.get_local_rank(d), t.shape[0]
    return t.to_local(), _refit.shard_rows(rows, n, c)[0], d


class _Engine:
    """What Trainer and Receiver share: the engine, binding, counters, closing."""

    def __init__(self, plan, role, rank, token, mem, device, **kw):
        self.plan = Plan(plan)
        if mem not in _MEM:
            raise Error(f"mem must be 'host' or 'cuda', not {mem!r}")
        if device is None:
            device = _torch().cuda.current_device() if mem == "cuda" else 0
        self.mem, self.device = mem, device
        self._timeout_ms = kw.get("timeout_ms") or 10000  # rf_config's default
        self._e = _refit.Engine(self.plan._p, role, rank, token, _MEM[mem], device, **kw)

    def _bind(self, info, tensor, row0=None):
        try:
            desc, keep = _describe(tensor, row0)
        except BindError as e:
            raise BindError(f"tensor '{info.name}': {e}") from None
        self._e.bind(info.side, info.id, desc, keep)

    def _stream(self, stream):
        if stream is None:
            if self.mem != "cuda":
                return 0
            return _torch().cuda.current_stream(self.device).cuda_stream
        return int(getattr(stream, "cuda_stream", stream))

    def counters(self):
        """The engine's counters (bytes, writes, stage_ns, ... see refit.h rf_counters)."""
        return self._e.counters()

    def ucx_setting(self, name):
        return self._e.ucx_setting(name)

    def close(self):
        self._e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_ENGINE_KW = ("timeout_ms", "max_inflight", "ucx_tls", "nic_mode", "gpu_bdf", "sysfs_root", "nic_min_gbps",
              "no_peer_errors", "handshake_ms", "progress_thread")


class Receiver(_Engine):
    """One receiver (one engine GPU) of a plan: bind the engine's tensors, listen or export, then per
    version: pause serving, arm(v), wait(v) (or stream_wait), resume. Options: mem ('host' | 'cuda'),
    device (CUDA ordinal), timeout_ms, handshake_ms, max_inflight, ucx_tls, nic_mode, gpu_bdf,
    nic_min_gbps, no_peer_errors, progress_thread (refit.h rf_config). auto_arm=True arms whatever
    trainers ask for: for tests and demos only, since writes then land while the engine may read."""

    def __init__(self, plan, index, *, token, mem="host", device=None, auto_arm=False, progress_thread=True, **kw):
        if set(kw) - set(_ENGINE_KW):
            raise TypeError(f"unknown options {sorted(set(kw) - set(_ENGINE_KW))}")
        self.index = index
        super().__init__(plan, _refit.RECEIVER, index, token, mem, device, auto_arm=auto_arm,
                         progress_thread=progress_thread, **kw)
        self._infos = self.plan.destinations(index)
        self._by_id = {(i.side, i.id): i for i in self._infos.values()}
        self._bound = {}  # (side, id) -> (name given, description) of what bind took

    @property
    def tensors(self):
        """{name: TensorInfo} of everything this receiver binds (destination and derived)."""
        return dict(self._infos)

    @property
    def unbound(self):
        """Names of this receiver's tensors that no bind() gave yet (by their name or an alias)."""
        return [n for n, i in self._infos.items() if (i.side, i.id) not in self._bound]

    def bind(self, tensors):
        """Bind {name: tensor}: the engine's own tensors (which must outlive the receiver) under the
        plan's names or their aliases. Everything given is checked before anything is bound: dtype,
        shape, strides and device against the table; every name of one table tensor (its aliases)
        must give the same tensor; derived views (MLA's W_UK_T / W_UV) must have the table's strides
        and storage offsets and lie in one storage of the table's size, or in the destination tensor
        they view. Returns the names still unbound (self.unbound)."""
        given = {}
        for name, t in tensors.items():
            info = self.plan.destination(name, self.index)
            try:
                desc, keep = _describe(t)
            except BindError as e:
                raise BindError(f"tensor '{name}': {e}") from None
            given.setdefault((info.side, info.id), []).append((name, t, desc, keep))
        for key, items in given.items():  # a name and its aliases: one tensor
            info = self._by_id[key]
            prev = self._bound.get(key)
            ref = prev if prev else items[0][::2]
            for name, _, desc, _ in items[0 if prev else 1:]:
                if not _same(ref[1], desc):
                    raise BindError(f"tensor '{info.name}' of plan '{self.plan.name}' (receiver {self.index}) is one "
                                    f"engine tensor under the names {', '.join(repr(n) for n in (info.name,) + info.aliases)}"
                                    f": '{ref[0]}' and '{name}' are different tensors ({_what(ref[1])} and {_what(desc)})")
        for key, items in given.items():
            info, (name, t, desc, _) = self._by_id[key], items[0]
            if info.side == _DERIVED and desc[10] < 0:
                raise BindError(f"tensor '{name}' (derived {info.id}): a {type(t).__name__} does not say where it lies "
                                f"in its storage; bind the engine's own tensor (torch.Tensor, or a numpy view)")
            try:
                self.plan._p.check(_refit.RECEIVER, self.index, _MEM[self.mem], self.device, info.side, info.id, desc)
            except BindError as e:
                raise BindError(str(e) if name == info.name else f"{e} (given as '{name}')") from None
        self._check_views({k: (v[0][0], v[0][1], v[0][2]) for k, v in given.items()})
        for key in sorted(given):  # destinations (side 2) before derived views (side 3)
            name, _, desc, keep = given[key][0]
            self._e.bind(key[0], key[1], desc, keep)
            self._bound.setdefault(key, (name, desc))
        return self.unbound

    def _check_views(self, new):
        """derived views of `new` ((side, id) -> (name, tensor, description)) against each other and
        what is bound: one storage per group of views, or the destination tensor they view"""
        groups = {}
        for key, (name, t, desc) in new.items():
            info = self._by_id[key]
            if info.side != _DERIVED:
                continue
            size = _itemsize(info.dtype)
            at = desc[0] - desc[10] * size
            if info.view_of is not None:
                dst = self._by_id[(_DST, info.view_of)]
                held = new.get((_DST, info.view_of)) or self._bound.get((_DST, info.view_of))
                if held is None:
                    raise BindError(f"derived view '{name}' of plan '{self.plan.name}' (receiver {self.index}) is a "
                                    f"view of '{dst.name}': bind '{dst.name}' with it or before it")
                d = held[-1]
                if at != d[0]:
                    raise BindError(f"derived view '{name}' of plan '{self.plan.name}' (receiver {self.index}) is a "
                                    f"view of '{dst.name}' at element offset {info.offset}; the engine's lies elsewhere "
                                    f"(its storage at {at:#x}, '{dst.name}' at {d[0]:#x}): a copy that updates of "
                                    f"'{dst.name}' never reach")
                continue
            first = self._by_id[(_DERIVED, info.storage)]
            st = _storage(t)
            if st is not None and (st[0] != at or st[1] != first.bytes):
                raise BindError(f"derived view '{name}' of plan '{self.plan.name}' (receiver {self.index}) lies at "
                                f"element offset {info.offset} of a storage of {first.bytes} bytes; the engine's storage "
                                f"is {st[1]} bytes at {st[0]:#x}, the view's storage start {at:#x}")
            groups.setdefault(info.storage, []).append((name, at))
        for sid, views in groups.items():
            prev = [(n, d[0] - d[10] * _itemsize(self._by_id[(_DERIVED, k[1])].dtype))
                    for k, (n, d) in self._bound.items() if k[0] == _DERIVED and self._by_id[k].storage == sid]
            views = prev + views
            for name, at in views[1:]:
                if at != views[0][1]:
                    first = self._by_id[(_DERIVED, sid)]
                    raise BindError(f"derived views '{views[0][0]}' and '{name}' of plan '{self.plan.name}' (receiver "
                                    f"{self.index}) lie in one storage of {first.bytes} bytes; the engine's lie in "
                                    f"different storages (at {views[0][1]:#x} and {at:#x})")

    def listen(self, host="0.0.0.0", port=0):
        """Register the bound tensors and listen; returns the port (port 0 = any)."""
        return self._e.listen(host, port)

    def export(self):
        """The receiver's metadata as bytes, for trainers' import_blob (after listen)."""
        return self._e.export()

    def arm(self, version):
        """The engine has stopped reading its weights: trainers may write `version` now. It must be
        newer than the complete version; arming a newer one while one is in progress tears that."""
        self._e.arm(version)

    def poll(self):
        """VersionState now (drives the transport once)."""
        return VersionState(*self._e.poll())

    def wait(self, version, timeout=None):
        """Wait until version (or a newer one) is complete; returns the VersionState. Raises
        TornError (.version, .reason) or TimeoutError after timeout seconds (None: no limit)."""
        ms = -1 if timeout is None else int(timeout * 1000)
        return VersionState(*self._e.version_wait(version, ms))

    def stream_wait(self, version, stream=None):
        """CUDA mode: make stream (a torch.cuda.Stream or a cudaStream_t as int; None: the current
        stream) wait on the GPU until version is complete. Usable while capturing a CUDA graph."""
        self._e.stream_wait(version, self._stream(stream))

    def finalize_steps(self):
        """This receiver's finalize steps (plan.finalize, refit.h rf_set_finalize), in the order it runs
        them: [(step name, destination name, 'kernel' or 'engine')]."""
        return self.plan.finalize_steps(self.index)

    def set_finalize(self, fn):
        """Set the engine's post-load code for this receiver's 'engine' finalize steps (before listen;
        listen refuses a plan with such steps and no hook): fn(version, steps), steps a list of
        (step name, destination name), runs once per version after every byte of it is in and the
        kernel steps ran, before the version is complete and before any trainer learns it. steps
        are those whose destination the version changed: all of them after a version sent dense,
        the first one and one after a torn version; in a delta version only those a patch or a
        region sent dense wrote to (fn is not called when there are none). An
        exception tears the version with its text (wait raises TornError naming the step; the
        trainers' wait too). fn runs on the receiver's progress thread (or inside wait / poll
        without one) while the engine is locked: it must not call this receiver (such a call raises
        Error). None clears it before listen. Its time: counters()["finalize_ns"] (all versions),
        ["last_finalize_ns"] (the last version), ["finalize_steps"] (run), ["finalize_skipped"]."""
        self._e.set_finalize(fn)


def _binding_plan(plan, replicate, shapes):
    """How each FSDP shard of replicate group `replicate` binds the sources it sends, from the plan
    and the module's tensors only (so every rank of the group decides the same, and the gathers'
    collectives match): shapes maps a name to (dim-0 rows, n), n the number of FSDP2 shards its
    dim 0 is split into (torch.chunk), None when unsharded. Returns ({shard: [names bound from the
    local tensor]}, [(name, owner shard)] gathered onto their owner), both in source id order."""
    fsdp = plan.fsdp
    needs = {s: plan.sources(replicate * fsdp + s) for s in range(fsdp)}
    order = {}
    for v in needs.values():
        for n, i in v.items():
            order[n] = i.id
    missing = [n for n in sorted(order, key=order.get) if n not in shapes]
    if missing:
        fused = re.compile(r"\.mlp\.experts\.(gate_up_proj|down_proj)$")
        one_by_one = re.compile(r"\.mlp\.experts\.\d+\.")
        hint = ""
        if any(fused.search(n) for n in missing) and any(one_by_one.search(n) for n in shapes):
            hint = ("; the module holds its experts one by one (transformers 4.x), the plan fused as transformers >= 5 "
                    "does (mlp.experts.gate_up_proj [E, 2I, H]): use a plan with trainer.experts = \"per_expert\"")
        elif any(one_by_one.search(n) for n in missing) and any(fused.search(n) for n in shapes):
            hint = ("; the module holds its experts fused (transformers >= 5), the plan one by one: use a plan with "
                    "trainer.experts = \"fused\"")
        close = difflib.get_close_matches(missing[0], list(shapes), n=1)
        raise BindError(f"{len(missing)} source(s) of plan '{plan.name}' not in the module, e.g. "
                        f"{', '.join(repr(n) for n in missing[:5])}" +
                        (hint or (f" (close to {close[0]!r})" if close else "")))
    direct, gathered = {}, []
    for name in sorted(order, key=order.get):
        rows, n = shapes[name]
        for s in range(fsdp):
            info = needs[s].get(name)
            if info is None:
                continue
            want = (info.row0, info.rows)
            have = (0, rows) if n is None else _refit.shard_rows(rows, n, s)
            if have == want or n is None:
                direct.setdefault(s, []).append(name)
            elif want == (0, rows):
                gathered.append((name, s))
            else:
                raise BindError(f"tensor '{name}': FSDP shard {s} of {n} holds rows {have[0]}..{sum(have) - 1} of "
                                f"{rows}, plan '{plan.name}' (fsdp {fsdp}) has trainer rank {replicate * fsdp + s} "
                                f"bind rows {want[0]}..{sum(want) - 1}: the module is sharded unlike the plan")
    return direct, gathered


class _Gather:
    """One gathered source: the full tensor on its owning FSDP shard, gathered every step."""
    __slots__ = ("name", "owner", "group", "dst", "local", "send", "recv")


class Trainer(_Engine):
    """One trainer rank of a plan: bind the sources it holds, connect to the receivers it writes to,
    push versions. rank = replicate * fsdp + shard, or from mesh (a torch DeviceMesh, HSDP 2-D as
    (replicate, shard)). Options as Receiver's, plus direct (write unconverted tensors straight from
    the bound sources) and delta (push each version as sparse patches against the version a receiver
    holds, where the plan has patch areas: refit.h rf_config.delta; not with direct)."""

    def __init__(self, plan, rank=None, *, token, mesh=None, mem="host", device=None, **kw):
        p = Plan(plan)
        if mesh is not None:
            r = p.trainer_rank(mesh=mesh)
            if rank is not None and rank != r:
                raise Error(f"rank {rank} given, the mesh says {r}")
            rank = r
        if rank is None:
            raise Error("Trainer needs rank= or mesh=")
        self.rank, self.mesh = rank, mesh
        self.shard, self.replicate = p._p.trainer(rank)[:2]
        keys = _ENGINE_KW + ("direct", "skip_down", "delta")
        if set(kw) - set(keys):
            raise TypeError(f"unknown options {sorted(set(kw) - set(keys))}")
        super().__init__(p, _refit.TRAINER, rank, token, mem, device, **kw)
        self._gathers = []

    @property
    def sources(self):
        """{name: TensorInfo} of every source this rank binds."""
        return self.plan.sources(self.rank)

    @property
    def receivers(self):
        """Receiver indices this rank writes to (connect or import each)."""
        return self.plan.receivers_of(self.rank)

    def bind(self, name, tensor, row0=None):
        """Bind source `name` as this rank holds it (a DTensor: its local shard, offset checked;
        row0: the dim-0 index where a plain tensor's piece starts, checked when given)."""
        self._bind(self.plan.source(name, self.rank), tensor, row0)

    def bind_module(self, module):
        """Bind every source this rank binds from a torch nn.Module (parameters and buffers by
        name) or a {name: tensor} mapping. FSDP2 DTensors bind their local dim-0 shard (its offset
        checked); a source the plan wants whole on this rank (gathered, or an expert FSDP2 split)
        gets a persistent buffer that refresh_gathered() fills; a plain (unsharded) tensor binds the
        rows this rank sends. Returns the names of the gathered sources."""
        named = dict(module) if isinstance(module, dict) else \
            {**dict(module.named_parameters(remove_duplicate=False)), **dict(module.named_buffers(remove_duplicate=False))}
        shapes = {}
        for n, t in named.items():
            d = _dtensor_local(t, f"tensor '{n}'")[2] if _is_dtensor(t) else None
            shapes[n] = (t.shape[0] if len(t.shape) else 1, None if d is None else t.device_mesh.size(d))
        direct, gathered = _binding_plan(self.plan, self.replicate, shapes)
        for name in direct.get(self.shard, ()):
            t, info = named[name], self.plan.source(name, self.rank)
            if _is_dtensor(t):
                self.bind(name, t)  # the local shard, at the offset its mesh coordinate gives
            elif info.rows == t.shape[0]:
                self.bind(name, t, row0=0)
            else:
                self.bind(name, t[info.row0:info.row0 + info.rows], row0=info.row0)
        for name, s in gathered:
            self._add_gather(name, named[name], s, self.plan.source(name, self.replicate * self.plan.fsdp + s))
        return [n for n, _ in gathered]

    def bind_megatron(self, model):
        """Bind every source this rank sends from a Megatron-core model, by the names it registers
        (decoder.layers.N.self_attention.linear_qkv.weight, ..., layer and expert numbers local to
        the rank): its parameters and persistent buffers (a router's expert_bias), each rank's own
        shard as it holds it, nothing gathered. model: the GPTModel, or it inside Megatron's DDP /
        Float16Module wrappers (their `module`), or a list of one such chunk. Rows the plan does not
        send (Megatron's padded vocabulary) are never bound. The rank is the plan's for this
        process's TP/PP/EP coordinates (Plan.megatron_rank). Returns [] (nothing is gathered)."""
        chunks = model if isinstance(model, (list, tuple)) else [model]
        if len(chunks) != 1:
            raise Error(f"{len(chunks)} model chunks (virtual pipeline stages): plan '{self.plan.name}' "
                        f"binds one Megatron model per rank")
        m = chunks[0]
        while not hasattr(m, "decoder") and hasattr(m, "module"):  # DDP, Float16Module
            m = m.module
        if self.rank != self.plan.megatron_rank():
            raise Error(f"trainer rank {self.rank} of plan '{self.plan.name}' binding a Megatron model whose "
                        f"parallel state gives rank {self.plan.megatron_rank()}")
        named = {**dict(m.named_parameters()), **dict(m.named_buffers())}
        srcs = self.sources  # this rank's own entries: other ranks hold other tensors under the same names
        missing = [n for n in srcs if n not in named]
        if missing:
            close = difflib.get_close_matches(missing[0], list(named), n=1)
            raise BindError(f"{len(missing)} source(s) of plan '{self.plan.name}' (trainer rank {self.rank}) not in "
                            f"the Megatron model, e.g. {', '.join(repr(n) for n in missing[:5])}" +
                            (f" (close to {close[0]!r})" if close else ""))
        for name, info in sorted(srcs.items(), key=lambda kv: kv[1].id):
            t = named[name]
            if t.shape[0] != info.shape[0]:
                raise BindError(f"tensor '{name}' (trainer rank {self.rank}): the model holds {tuple(t.shape)}, plan "
                                f"'{self.plan.name}' {tuple(info.shape)}: the model is split unlike the plan")
            self.bind(name, t if info.rows == t.shape[0] else t[info.row0:info.row0 + info.rows], row0=info.row0)
        return []

    def _add_gather(self, name, t, owner, info):
        torch, dist = _torch(), _torch().distributed
        local, _, d = _dtensor_local(t, f"tensor '{name}'")
        g = _Gather()
        g.name, g.owner = name, owner
        g.group = t.device_mesh.get_group(d)
        g.dst = dist.get_global_rank(g.group, owner)
        n = t.device_mesh.size(d)
        chunk = -(-t.shape[0] // n)
        g.local = local
        g.send = None if local.shape[0] == chunk else torch.zeros((chunk,) + tuple(t.shape[1:]), dtype=local.dtype,
                                                                  device=local.device)
        g.recv = None
        if owner == self.shard:  # the full tensor, padded to n chunks; the bound view is its first rows
            full = torch.empty((n * chunk,) + tuple(t.shape[1:]), dtype=local.dtype, device=local.device)
            g.recv = list(full.split(chunk))
            self._bind(info, full[:t.shape[0]], row0=0)
        self._gathers.append(g)

    def refresh_gathered(self):
        """Gather each gathered source onto its owning FSDP shard only (torch.distributed.gather
        over the shard group, into the persistent buffers bind_module made). Call after every
        optimizer step, before push, on every rank of the group (it is a collective)."""
        dist = _torch().distributed if self._gathers else None
        for g in self._gathers:
            send = g.local
            if g.send is not None:  # a short (or empty) last chunk: padded to the chunk size
                g.send[:g.local.shape[0]].copy_(g.local)
                send = g.send
            dist.gather(send, gather_list=g.recv, dst=g.dst, group=g.group)

    def connect(self, receiver, host, port):
        """Connect to receiver at host:port (present the layout hash, rank and token)."""
        self._e.connect(receiver, host, port)

    def import_blob(self, blob):
        """Connect from a blob the receiver exported."""
        self._e.import_blob(blob)

    @property
    def resume_version(self):
        """The version to push next: one more than the newest complete version of any receiver this
        rank is connected to (learnt when it connected) and than any it pushed. A restarted trainer
        starts there."""
        return self._e.resume_version()

    def target(self, receiver):
        """(status, complete, where, reason) of this rank's connection and push to `receiver`:
        status is one of down, connecting, idle, waiting, writing, flushing, complete, failed,
        skipped; complete is that receiver's newest complete version as last heard."""
        return self._e.target(receiver)

    def push(self, version, stream=None):
        """Start pushing version: newer than every connected receiver's complete version (a retry of
        a version that failed is allowed). CUDA mode: stream (torch.cuda.Stream, or a cudaStream_t as
        int; None: the current stream) is the one the sources are ready on. Each receiver's writes go
        out once it armed the version."""
        self._e.push(version, self._stream(stream))

    def wait(self, timeout=None):
        """Until every receiver acknowledged the version complete; returns the receivers skipped
        because they were down (skip_down=True), [] when none. Raises TornError / Error with the
        receiver and reason, or TimeoutError after timeout seconds (None: the engine's timeout_ms; a
        timed-out push is given up and its writes fenced)."""
        ms = self._timeout_ms if timeout is None else int(timeout * 1000)
        return self._e.wait(min(max(1, ms), 2**32 - 1))  # milliseconds as rf_wait takes them (uint32)

    def progress(self):
        """Drive the push once without blocking; True while it is under way."""
        return self._e.progress()
