"""standins.py: a vLLM or SGLang worker's parameters as the dumps record them, for the plug-ins' tests.

    tensors, settings = load(DUMP, rank, device=None)

tensors maps every `param` name of rank `rank` in a dump (tests/vllm/dumps, README.md there;
tests/sglang/dumps) to a
tensor laid out as vLLM holds it: one fresh storage per storage#K of the dump (of its nbytes), each
parameter a view of it at the dump's dtype, shape, stride and offset, so that a Parameter registered
twice, MLA's W_UK_T / W_UV and the drafter's tensors shared with the target (`shared-with-target`)
share memory exactly as in the engine. device None: numpy views wrapped in StandIn (the torch.Tensor
calls the plug-in makes: data_ptr, shape, stride, dtype, device, storage_offset, untyped_storage);
else torch tensors on that device. settings: EngineView fields the dump records (vLLM version, the
GPU's capability, TP size and rank, the MoE kernels chosen; for SGLang the MoE runner backend and
MLA's derived attributes w_kc / w_vc), and "engine": "vllm" or "sglang".
"""
import os
import re

import numpy as np

_LINE = re.compile(r"^param (\S+) (\w+) shape=\[([\d, ]*)\] stride=\[([\d, ]*)\] off=(\d+) storage#(\d+) nbytes=(\d+)")


def _np_dtype(name):
    if name in ("float32", "int32", "int64", "uint8"):
        return np.dtype(name)
    import ml_dtypes
    return np.dtype(getattr(ml_dtypes, name))


class _Storage:
    def __init__(self, buf):
        self.buf = buf

    def data_ptr(self):
        return self.buf.__array_interface__["data"][0]

    def nbytes(self):
        return self.buf.nbytes


class _Device:
    type, index = "cpu", None

    def __str__(self):
        return "cpu"


class StandIn:
    """a numpy view of a storage, with the torch.Tensor calls the plug-in makes"""

    def __init__(self, a, storage):
        self.a, self._storage = a, storage
        self.device = _Device()

    @property
    def __array_interface__(self):
        return self.a.__array_interface__

    @property
    def dtype(self):
        return self.a.dtype

    @property
    def shape(self):
        return self.a.shape

    def stride(self):
        return tuple(s // self.a.itemsize for s in self.a.strides)

    def data_ptr(self):
        return self.a.__array_interface__["data"][0]

    def storage_offset(self):
        return (self.data_ptr() - self._storage.data_ptr()) // self.a.itemsize

    def untyped_storage(self):
        return self._storage


def parse(path, rank):
    """(params [(name, dtype, shape, stride, offset, storage key, nbytes)], shared {drafter name: target
    name}, settings) of rank `rank` in a dump"""
    params, shared, settings, cur, section = [], {}, {}, None, "target"
    for line in open(path):
        m = re.match(r"# vllm model dump rank=(\d+)/(\d+) .*cap=DeviceCapability\(major=(\d+), minor=(\d+)\)", line) \
            or re.match(r"# sglang model dump rank=(\d+)/(\d+) .*fake_cuda_cap=(\d+)\.(\d+) ", line)
        if m:
            cur, section = int(m.group(1)), "target"
            if cur == rank:
                settings = dict(tp_size=int(m.group(2)), tp_rank=rank, device_capability=(int(m.group(3)), int(m.group(4))),
                                engine=line.split()[1])
            continue
        if cur != rank:
            continue
        if line.startswith("# ===== MTP draft model"):
            section = "drafter"
        elif line.startswith("shared-with-target "):
            a, b = line.split()[1::2]
            shared[a] = b
        elif line.startswith("attr ") and re.match(r"attr \S+\.w_[kv]c ", line):
            settings["mla_derived"] = settings.get("mla_derived", ()) + (line.split()[1],)
        elif line.startswith("module ") and "moe_runner_backend=" in line:
            settings["moe_runner_backend"] = line.split("moe_runner_backend=")[1].split()[0]
        elif line.startswith("module ") and "moe_kernel.fused_experts=" in line:
            settings.setdefault("moe_kernels", {})[line.split()[1]] = line.split("moe_kernel.fused_experts=")[1].split()[0]
        else:
            m = _LINE.match(line)
            if m:
                dims = [tuple(int(x) for x in g.split(",") if x.strip()) for g in (m.group(3), m.group(4))]
                params.append((m.group(1), m.group(2), dims[0], dims[1], int(m.group(5)), (section, int(m.group(6))),
                               int(m.group(7))))
    assert params, f"{path}: no rank {rank}"
    return params, shared, settings


def load(path, rank, device=None):
    params, shared, settings = parse(path, rank)
    by_name = {p[0]: p for p in params}
    key = {p[0]: p[5] for p in params}
    for a, b in shared.items():  # the drafter's tensors that are the target's: the target's storage
        key[a] = key[b]
    storages, out = {}, {}
    for name, dtype, shape, stride, off, _, nbytes in params:
        k = key[name]
        if k not in storages:
            nb = by_name[shared[name]][6] if name in shared else nbytes
            storages[k] = _alloc(nb, device)
        out[name] = _view(storages[k], dtype, shape, stride, off, device)
    # the dumps' vLLM and SGLang (tests/vllm/README.md, tests/sglang/README.md)
    settings["version"] = "0.5.23" if settings["engine"] == "sglang" else "0.33.0"
    if settings["engine"] == "vllm" and settings["device_capability"][0] == 10:
        settings["deep_gemm_e8m0"] = True  # vLLM's default on SM100 (VLLM_USE_DEEP_GEMM_E8M0=1), which the dumps ran
    ep = re.search(r"_ep(\d+)_", os.path.basename(path))  # SGLang's header does not record it: the file name does
    if ep and settings["engine"] == "sglang":  # ep = tp: EP rank = TP rank
        settings.update(ep_size=int(ep.group(1)), ep_rank=settings["tp_rank"])
    return out, settings


def _alloc(nbytes, device):
    if device is None:
        return _Storage(np.zeros(nbytes, np.uint8))
    import torch
    return torch.zeros(nbytes, dtype=torch.uint8, device=device)


def _view(st, dtype, shape, stride, off, device):
    if device is None:
        dt = _np_dtype(dtype)
        a = np.ndarray(shape, dt, buffer=st.buf, offset=off * dt.itemsize, strides=tuple(s * dt.itemsize for s in stride))
        return StandIn(a, st)
    import torch
    return st.view(getattr(torch, dtype)).as_strided(shape, stride, off)


def dump_of(plan_name, dumps):
    """the dump file in tests/<engine>/dumps of an <engine>_* conformance plan (tests/test_conformance.sh
    pairs them the same way; an SM100 plan's _requant twin, fp32 scales from the trainer, has its dump)"""
    import glob
    import os
    engine = os.path.basename(os.path.dirname(os.path.abspath(dumps)))  # tests/<engine>/dumps
    m = re.fullmatch(engine + r"_(\w+?)_(bf16|fp8)_tp(\d+)(_ep\d+)?(_sm100(?:_deepgemm)?)?(?:_requant)?", plan_name)
    if not m:
        return None
    model, ep, sm = m.group(1).replace("_", ""), m.group(4) or "", m.group(5) or "_sm90"  # SM100 plans: *_sm100
    hits = sorted(h for h in glob.glob(os.path.join(dumps, f"{model}_{m.group(2)}_tp{m.group(3)}{ep}*{sm}.txt"))
                  if ("_ep" in os.path.basename(h)) == bool(ep))  # an EP dump only for an EP plan
    return hits[0] if hits else None
