"""test_python.py: the refit Python module with numpy arrays (no GPU, no torch).

Lookups against the tables, every typed-bind refusal with its exact message, the shared library's
exports, and loopback pushes between processes (receivers listen on 127.0.0.1, trainers connect or
import blobs, UCX over tcp) whose every destination byte is compared with tests/engine_ref.py, an
independent numpy computation of the engine format from the full HF state dict. Run by
tests/test_python.sh (PYTHONPATH=build/python); prints one ok/FAIL line per test and
'N passed, N failed'.
"""
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib

import ml_dtypes
import numpy as np

import refit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = 0x5EC2E7
BF16, FP8 = ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn


def expect_raises(cls, fn, message, status_name=None):
    try:
        fn()
    except cls as e:
        assert str(e) == message, f"message\n  got:  {e}\n  want: {message}"
        if status_name is not None:
            assert e.status_name == status_name, f"status {e.status_name}, want {status_name}"
        return e
    raise AssertionError(f"no {cls.__name__} raised (want: {message})")


# ------------------------------------------------------------------------------------------------
# data: every source a pure function of (version, name); magnitudes differ per 128x128 block so
# FP8 scales differ

def source_data(name, shape, dtype, version):
    rng = np.random.default_rng([version, zlib.crc32(name.encode())])
    x = rng.uniform(-1, 1, size=shape).astype(np.float32)
    x2 = x.reshape(shape[0], -1)
    br, bc = -(-x2.shape[0] // 128), -(-x2.shape[1] // 128)
    mag = np.exp2(rng.integers(-6, 6, size=(br, bc))).astype(np.float32)
    x2 *= np.repeat(np.repeat(mag, 128, 0), 128, 1)[:x2.shape[0], :x2.shape[1]]
    return x.astype(BF16 if dtype == "bfloat16" else np.float32)


def state_dict(plan, version):
    """the full HF state dict of the plan's model (the sources as one trainer with fsdp 1 holds them)"""
    return {n: source_data(n, i.shape, i.dtype, version) for n, i in full_sources(plan).items()}


def full_sources(plan):
    out = {}
    for r in range(plan.trainers):
        for n, i in plan.sources(r).items():
            out.setdefault(n, i)
    return out


def family_of(plan):
    cfg = engine_ref.model_config(f"{ROOT}/models/{plan.model}.lua")
    return cfg["family"], cfg


def reference(plan, receiver, version, sd=None):
    family, cfg = family_of(plan)
    pos = plan._p.receiver(receiver)[1]
    lua = open(f"{ROOT}/models/plans/{plan.name}.lua").read()
    fp8 = re.search(r"fp8\s*=\s*true", lua) is not None
    ue8m0 = plan.scale_fmt == "ue8m0"
    return engine_ref.engine_format(family, cfg, sd or state_dict(plan, version), tp=plan.tp, ep=plan.ep,
                                    position=pos, fp8=fp8, ue8m0=ue8m0)


# ------------------------------------------------------------------------------------------------

def test_library():
    have = set(re.search(r"^plan_set = (.*)$", open(f"{ROOT}/config.ninja").read(), re.M).group(1).split())
    assert set(refit.plans()) == have, f"plans {refit.plans()}, configure chose {sorted(have)}"
    assert refit.ABI_VERSION == 1
    e = expect_raises(refit.Error, lambda: refit.Plan("nope"),
                      f"no plan 'nope' in this librefit.so (it has: {' '.join(refit.plans())}; "
                      f"./configure --plans=... chooses them)", "RF_ERR_ARG")
    assert e.status == 1 and e.version is None
    # exports: every function refit.h declares, and nothing but rf_* (no rf__ internals, no kernels)
    so = f"{ROOT}/build/librefit.so"
    syms = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True, check=True).stdout.split()
    exported = {s for s in syms[2::3]}
    declared = set(re.findall(r"\b(rf_\w+)\(", open(f"{ROOT}/runtime/include/refit.h").read()))
    declared |= set(re.findall(r"\b(rf_plan_\w+)\(", open(f"{ROOT}/runtime/include/refit_plan.h").read()))
    assert declared - exported == set(), f"declared, not exported: {sorted(declared - exported)}"
    bad = sorted(s for s in exported if not s.startswith("rf_") or s.startswith("rf__"))
    assert not bad, f"exported beyond rf_*: {bad[:10]}"
    for p in refit.plans():
        assert f"rf_plan_{p}" in exported


def test_source_lookups():
    p = refit.Plan("qwen3_tiny_tp2")
    assert (p.fsdp, p.dp_replicate, p.trainers, p.tp, p.ep, p.replicas, p.receivers) == (2, 1, 2, 2, 1, 2, 4)
    e = p.source("model.embed_tokens.weight", 1)
    assert e == refit.TensorInfo("model.embed_tokens.weight", 0, 1, "bfloat16", (1024, 256), 512, 512, 262144, "shard",
                                 None), e
    assert e.bind_shape == (512, 256)
    n0, n1 = p.source("model.layers.0.self_attn.q_norm.weight", 0), p.source("model.layers.0.self_attn.q_norm.weight", 1)
    assert (n0.travel, n0.owner, n0.bytes, n1.row0, n1.rows, n1.bytes, n1.shape) == ("gather", 1, 0, 0, 128, 256, (128,))
    assert "model.layers.0.self_attn.q_norm.weight" in p.sources(1) and "model.layers.0.self_attn.q_norm.weight" not in p.sources(0)
    expect_raises(refit.BindError, lambda: p.source("model.embed_token.weight"),
                  "plan 'qwen3_tiny_tp2' has no source tensor 'model.embed_token.weight'; close: "
                  "'model.embed_tokens.weight', 'model.norm.weight', 'model.layers.1.mlp.down_proj.weight'")
    # every plan: per replicate group that sends a tensor, shards partition its rows or one owner binds it whole
    for name in refit.plans():
        p = refit.Plan(name)
        by = [p.sources(r) for r in range(p.trainers)]
        for n, i in full_sources(p).items():
            for g in range(p.dp_replicate):
                parts = sorted((by[r][n].row0, by[r][n].rows) for r in range(g * p.fsdp, (g + 1) * p.fsdp) if n in by[r])
                if not parts:
                    continue
                if i.travel == "shard":
                    assert parts[0][0] == 0 and all(a + b == c for (a, b), (c, _) in zip(parts, parts[1:])) and \
                        sum(b for _, b in parts) == i.shape[0], (name, n, parts)
                else:
                    assert parts == [(0, i.shape[0])], (name, n, parts)
                    assert n in by[g * p.fsdp + i.owner], (name, n, i.owner)


class FakeMesh:
    """what Plan.trainer_rank reads of a torch DeviceMesh"""

    def __init__(self, sizes, coords):
        self.ndim, self._s, self._c = len(sizes), sizes, coords

    def size(self, d):
        return self._s[d]

    def get_local_rank(self, d):
        return self._c[d]


def test_ranks():
    p = refit.Plan("glm_tiny_rep2")  # HSDP 2 x 2 into 2 replicas of TP2/EP2
    assert [p.trainer_rank(s, r) for r in range(2) for s in range(2)] == [0, 1, 2, 3]
    assert p.trainer_rank(mesh=FakeMesh((2, 2), (1, 0))) == 2
    expect_raises(refit.Error, lambda: p.trainer_rank(mesh=FakeMesh((4,), (1,))),
                  "mesh is 1 x 4 (replicate x shard), plan 'glm_tiny_rep2' is 2 x 2 (dp_replicate x fsdp)")
    expect_raises(refit.Error, lambda: p.trainer_rank(2, 0),
                  "shard 2 / replicate 0 outside plan 'glm_tiny_rep2' (fsdp 2, dp_replicate 2)")
    assert [p.receiver_index(rep, tp) for rep in range(2) for tp in range(2)] == [0, 1, 2, 3]
    assert p.receiver_index(1, 1, ep_rank=1) == 3
    expect_raises(refit.Error, lambda: p.receiver_index(0, 1, ep_rank=0),
                  "tp_rank 1 / ep_rank 0 outside plan 'glm_tiny_rep2' (tp 2, ep 2: the EP rank equals the TP rank)")
    assert refit.Plan("qwen3_tiny_fp8_tp4").trainer_rank(mesh=FakeMesh((4,), (3,))) == 3
    # each replicate group feeds its own replica here
    assert p.receivers_of(0) == [0, 1] and p.receivers_of(3) == [2, 3] and p.trainers_of(2) == [2, 3]
    q = refit.Plan("qwen3_tiny_tp2")
    d = q.destination("model.layers.1.self_attn.qkv_proj.weight", 3)
    assert (d.shape, d.dtype, d.bytes, d.rows, d.side, d.travel) == ((512, 256), "bfloat16", 262144, 512, 2, None)
    g = refit.Plan("glm_tiny_demo").destinations(1)
    assert g["model.layers.0.self_attn.W_UK_T"].shape == (2, 64, 128) and g["model.layers.0.self_attn.W_UK_T"].side == 3
    assert g["model.layers.1.mlp.experts.w13_weight"].shape == (4, 512, 256)
    assert g["model.layers.1.mlp.experts.w13_weight"].dtype == "float8_e4m3fn"
    expect_raises(refit.BindError, lambda: q.destination("model.layers.0.qkv_proj.weight", 0),
                  "plan 'qwen3_tiny_tp2' has no receiver 0 tensor 'model.layers.0.qkv_proj.weight'; close: "
                  "'model.layers.0.self_attn.qkv_proj.weight', 'model.layers.0.mlp.down_proj.weight', "
                  "'model.layers.1.self_attn.qkv_proj.weight'")


def test_binding_plan():
    """what bind_module decides for FSDP2-sharded, unsharded and wrongly sharded modules"""
    p = refit.Plan("qwen3_tiny_tp2")
    srcs = full_sources(p)
    fsdp2 = {n: (i.shape[0], 2) for n, i in srcs.items()}
    direct, gathered = refit._binding_plan(p, 0, fsdp2)
    want_g = [(n, i.owner) for n, i in sorted(srcs.items(), key=lambda x: x[1].id) if i.travel == "gather"]
    assert gathered == want_g and len(want_g) == 9, gathered
    for s in range(2):
        assert direct[s] == [n for n, i in sorted(srcs.items(), key=lambda x: x[1].id) if i.travel == "shard"], direct[s]
    direct, gathered = refit._binding_plan(p, 0, {n: (i.shape[0], None) for n, i in srcs.items()})
    assert gathered == [] and [direct[s] for s in range(2)] == [list(p.sources(s)) for s in range(2)]
    expect_raises(refit.BindError, lambda: refit._binding_plan(p, 0, {n: (i.shape[0], 4) for n, i in srcs.items()}),
                  "tensor 'model.embed_tokens.weight': FSDP shard 0 of 4 holds rows 0..255 of 1024, plan "
                  "'qwen3_tiny_tp2' (fsdp 2) has trainer rank 0 bind rows 0..511: the module is sharded unlike the plan")
    del fsdp2["model.norm.weight"], fsdp2["model.layers.1.mlp.up_proj.weight"]
    fsdp2["model.norm.weights"] = (256, 2)
    expect_raises(refit.BindError, lambda: refit._binding_plan(p, 0, fsdp2),
                  "2 source(s) of plan 'qwen3_tiny_tp2' not in the module, e.g. 'model.layers.1.mlp.up_proj.weight', "
                  "'model.norm.weight' (close to 'model.layers.0.mlp.up_proj.weight')")
    # HSDP: each replicate group decides for its own ranks
    g = refit.Plan("glm_tiny_rep2")
    gs = full_sources(g)
    d1, g1 = refit._binding_plan(g, 1, {n: (i.shape[0], 2) for n, i in gs.items()})
    assert g1 and all(s == gs[n].owner for n, s in g1), g1
    assert sorted(d1[0] + [n for n, s in g1 if s == 0]) == sorted(g.sources(2)), "rank 2 binds all it sends"


def test_reference_matches_tables():
    """the independent reference has exactly the tables' tensors: names, shapes, dtypes"""
    for name in refit.plans():
        p = refit.Plan(name)
        sd = state_dict(p, 1)
        for r in range(p.receivers):
            want = {n: (i.shape, i.dtype) for n, i in p.destinations(r).items()}
            got = {n: (a.shape, a.dtype.name) for n, a in reference(p, r, 1, sd).items()}
            assert got == want, (name, r, sorted(set(got.items()) ^ set(want.items()))[:6])


class CudaArray:
    """an object with only __cuda_array_interface__ (and CuPy's .device.id)"""

    class device:
        id = 0

    def __init__(self, shape, typestr):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (0x7f0000000000, False),
                                         "strides": None, "version": 3}


class DlpackOnly:
    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)


def test_bind_refusals():
    p = refit.Plan("qwen3_tiny_tp2")
    tr = refit.Trainer(p, 1, token=TOKEN, ucx_tls="tcp")
    E = "tensor 'model.embed_tokens.weight' (source 0, trainer rank 1)"
    shard = np.zeros((512, 256), BF16)
    expect_raises(refit.BindError, lambda: tr.bind("model.embed_tokens.weight", np.zeros((512, 256), np.float32)),
                  f"{E}: dtype float32, expected bfloat16 (the plan's source dtype)", "RF_ERR_TYPE")
    expect_raises(refit.BindError, lambda: tr.bind("model.embed_tokens.weight", np.zeros((1024, 256), BF16)),
                  f"{E}: shape [1024, 256], expected [512, 256] (rows 512..1023 of [1024, 256], FSDP shard 1 of 2): "
                  "the whole tensor, not this rank's shard")
    expect_raises(refit.BindError, lambda: tr.bind("model.embed_tokens.weight", shard, row0=0),
                  f"{E}: holds rows 0..511 of [1024, 256], this rank binds rows 512..1023 (FSDP shard 1 of 2): "
                  "the wrong shard")
    O = "tensor 'model.layers.0.self_attn.o_proj.weight' (source 4, trainer rank 1)"
    expect_raises(refit.BindError, lambda: tr.bind("model.layers.0.self_attn.o_proj.weight", np.zeros((512, 128), BF16)),
                  f"{O}: shape [512, 128], expected [128, 512] (rows 128..255 of [256, 512], FSDP shard 1 of 2): "
                  "transposed")
    expect_raises(refit.BindError, lambda: tr.bind("model.layers.0.self_attn.o_proj.weight", np.zeros((512, 128), BF16).T),
                  f"{O}: strides [1, 128] (elements), expected [512, 1]: a transposed view; bind a row-major copy")
    expect_raises(refit.BindError,
                  lambda: tr.bind("model.layers.0.self_attn.o_proj.weight", np.zeros((128, 1024), BF16)[:, ::2]),
                  f"{O}: strides [1024, 2] (elements), expected [512, 1]: not row-major contiguous; bind a contiguous copy")
    expect_raises(refit.BindError, lambda: tr.bind("model.layers.0.self_attn.q_norm.weight", np.zeros((128, 1), BF16)),
                  "tensor 'model.layers.0.self_attn.q_norm.weight' (source 5, trainer rank 1): shape [128, 1], expected [128]")
    expect_raises(refit.BindError, lambda: tr.bind("model.layers.0.input_layernorm.weight", np.zeros(256, BF16)),
                  "tensor 'model.layers.0.input_layernorm.weight' (source 7, trainer rank 1): this rank binds nothing of "
                  "it (FSDP shard 0 binds it whole)", "RF_ERR_ARG")
    expect_raises(refit.BindError, lambda: tr.bind("model.embed_tokens.weight", CudaArray((512, 256), "<V2")),
                  "tensor 'model.embed_tokens.weight': dtype <V2 is not one refit knows (bfloat16, float32, float8_e4m3fn)")
    expect_raises(refit.BindError, lambda: tr.bind("model.embed_tokens.weight", CudaArray((512, 256), "<f4")),
                  f"{E}: dtype float32, expected bfloat16 (the plan's source dtype)")
    expect_raises(refit.BindError, lambda: tr.bind("model.layers.0.self_attn.q_norm.weight", CudaArray((128,), "<u2")),
                  "tensor 'model.layers.0.self_attn.q_norm.weight' (source 5, trainer rank 1): dtype uint16, "
                  "expected bfloat16 (the plan's source dtype)")
    expect_raises(refit.BindError, lambda: tr.bind("model.embed_tokens.weight", 5),
                  "tensor 'model.embed_tokens.weight': a int is not a tensor refit can bind (torch.Tensor, or an object with __array_interface__, "
                  "__cuda_array_interface__ or __dlpack__)")
    # the same check without an engine
    expect_raises(refit.BindError, lambda: p.check("model.embed_tokens.weight", np.zeros((512, 256), np.float32), rank=1),
                  f"{E}: dtype float32, expected bfloat16 (the plan's source dtype)")
    # nothing half-applied: the right tensors still bind
    tr.bind("model.embed_tokens.weight", shard, row0=512)
    tr.bind("model.layers.0.self_attn.q_norm.weight", np.zeros(128, BF16))
    tr.close()
    expect_raises(refit.Error, lambda: tr.bind("model.embed_tokens.weight", shard), "the engine is closed", "RF_ERR_STATE")

    rx = refit.Receiver(refit.Plan("qwen3_tiny_fp8_tp4"), 0, token=TOKEN, ucx_tls="tcp")
    Q = "tensor 'model.layers.0.self_attn.qkv_proj.weight' (dst 1, receiver 0)"
    expect_raises(refit.BindError, lambda: rx.bind({"model.layers.0.self_attn.qkv_proj.weight": np.zeros((384, 256), np.uint8)}),
                  f"{Q}: dtype uint8, expected float8_e4m3fn")
    ro = np.zeros((384, 256), FP8)
    ro.flags.writeable = False
    expect_raises(refit.BindError, lambda: rx.bind({"model.layers.0.self_attn.qkv_proj.weight": ro}),
                  f"{Q}: read-only memory; the receiver's tensors are written by the trainers")
    expect_raises(refit.BindError, lambda: rx.bind({"model.layers.0.self_attn.qkv_proj.weight": CudaArray((384, 256), "|u1")}),
                  f"{Q}: dtype uint8, expected float8_e4m3fn")
    a = np.zeros((384, 256), FP8)
    cuda_fp8 = CudaArray((384, 256), "|u1")
    cuda_fp8.dtype = a.dtype
    expect_raises(refit.BindError, lambda: rx.bind({"model.layers.0.self_attn.qkv_proj.weight": cuda_fp8}),
                  f"{Q}: on cuda:0, the engine binds host memory (mem = RF_MEM_HOST)")
    other = refit.Plan("qwen3_tiny_fp8_tp4").destination("model.layers.0.self_attn.qkv_proj.weight", 1).id
    desc, _ = refit._describe(a)
    expect_raises(refit.BindError, lambda: rx._e.bind(2, other, desc, a),
                  f"tensor 'model.layers.0.self_attn.qkv_proj.weight' (dst {other}) is not a tensor of receiver 0",
                  "RF_ERR_ARG")
    expect_raises(refit.BindError, lambda: rx._e.bind(1, 0, desc, a),
                  "source tensors are bound by trainers, this engine is a receiver")
    rx.bind({"model.layers.0.self_attn.qkv_proj.weight": a})
    expect_raises(refit.Error, lambda: rx.listen("127.0.0.1"),
                  "tensor 'model.embed_tokens.weight' (dst 0) of receiver 0 is not bound", "RF_ERR_UNBOUND")
    expect_raises(refit.Error, lambda: rx.arm(1), "rf_arm before rf_listen", "RF_ERR_STATE")
    rx.close()

    # DLPack: a capsule's description (numpy exports fp32 and fp16, not bf16)
    rx = refit.Receiver(refit.Plan("glm_tiny_demo"), 0, token=TOKEN, ucx_tls="tcp")
    K = "model.layers.0.self_attn.indexer.k_norm.weight"
    expect_raises(refit.BindError, lambda: rx.bind({K: DlpackOnly(np.zeros(128, np.float16))}),
                  f"tensor '{K}' (dst 14, receiver 0): dtype float16, expected float32")
    expect_raises(refit.BindError, lambda: rx.bind({K: DlpackOnly(np.zeros(256, np.float32)[::2])}),
                  f"tensor '{K}' (dst 14, receiver 0): strides [2] (elements), expected [1]: not row-major contiguous; "
                  "bind a contiguous copy")
    rx.bind({K: DlpackOnly(np.zeros(128, np.float32))})
    rx.close()


def test_wait_releases_gil():
    rx = refit.Receiver(refit.Plan("qwen3_tiny_tp2"), 0, token=TOKEN, ucx_tls="tcp")
    rx.bind({n: i.empty() for n, i in rx.tensors.items()})
    rx.listen("127.0.0.1")
    errs, ticks = [], [0]

    def waiter():
        try:
            rx.wait(1, timeout=0.6)
        except refit.TimeoutError as e:
            errs.append(e)

    th = threading.Thread(target=waiter)
    t0 = time.monotonic()
    th.start()
    while th.is_alive():
        ticks[0] += 1
    dt = time.monotonic() - t0
    assert len(errs) == 1 and errs[0].status_name == "RF_ERR_TIMEOUT" and isinstance(errs[0], TimeoutError), errs
    assert str(errs[0]) == "version 1 not complete after 600 ms (newest complete 0)", str(errs[0])
    assert 0.55 < dt < 5 and ticks[0] > 10000, (dt, ticks[0])
    assert rx.poll() == refit.VersionState(0, 0, 0, 0, ""), rx.poll()
    rx.arm(3)
    expect_raises(refit.Error, lambda: rx.arm(0), "rf_arm(0): not newer than the complete version 0", "RF_ERR_STALE")
    assert rx.poll() == refit.VersionState(0, 0, 3, 0, ""), rx.poll()
    rx.close()


# ------------------------------------------------------------------------------------------------
# loopback: receivers and trainers in forked processes, the parent drives versions through pipes

def receiver_proc(plan_name, index, versions, use_blob, conn):
    try:
        plan = refit.Plan(plan_name)
        rx = refit.Receiver(plan, index, token=TOKEN, ucx_tls="tcp", timeout_ms=15000)
        bufs = {n: i.empty() for n, i in rx.tensors.items()}
        for b in bufs.values():
            b.view(np.uint8)[...] = 0xA5  # poison: a byte never written shows
        rx.bind(bufs)
        port = rx.listen("127.0.0.1")
        conn.send(("port", index, port, rx.export() if use_blob else None))
        for v in range(1, versions + 1):
            rx.arm(v)  # the engine stopped reading: trainers may write v
            conn.send(("ready", index, v))
            st = rx.wait(v, timeout=60)
            want = reference(plan, index, v)
            bad, first = 0, None
            for n, w in want.items():
                d = int((bufs[n].view(np.uint8).reshape(-1) != w.view(np.uint8).reshape(-1)).sum())
                if d and first is None:
                    first = f"receiver {index}: '{n}' differs in {d} of {w.nbytes} bytes"
                bad += d
            total = sum(w.nbytes for w in want.values())
            c = rx.counters()
            conn.send(("result", index, v, st.complete, bad, total, first, c["versions"], c["bytes"]))
        rx.close()
    except Exception:
        conn.send(("fatal", index, traceback.format_exc()))


def trainer_proc(plan_name, rank, addrs, versions, mode, conn):
    try:
        plan = refit.Plan(plan_name)
        tr = refit.Trainer(plan, rank, token=TOKEN, ucx_tls="tcp", timeout_ms=15000, direct=mode == "direct")
        srcs = tr.sources
        if mode == "module":  # the whole state dict, as a trainer without FSDP holds it
            held = state_dict(plan, 1)
            assert tr.bind_module(held) == []
        else:  # only its own rows, as FSDP2 shards: bound with their row offsets
            held = {n: i.empty() for n, i in srcs.items()}
            for n, i in srcs.items():
                tr.bind(n, held[n], row0=i.row0)
        for r in tr.receivers:
            if mode == "blob":
                tr.import_blob(addrs[r][1])
            else:
                tr.connect(r, "127.0.0.1", addrs[r][0])
        for v in range(1, versions + 1):
            cmd = conn.recv()
            assert cmd == ("push", v), cmd
            sd = state_dict(plan, v)
            for n, i in srcs.items():
                held[n][...] = sd[n] if mode == "module" else sd[n][i.row0:i.row0 + i.rows]
            tr.push(v)
            assert tr.wait() == [], "no receiver is down"
            assert tr.resume_version == v + 1 and tr.target(tr.receivers[0])[:2] == ("complete", v), tr.target(tr.receivers[0])
            conn.send(("pushed", rank, v, tr.counters()["bytes"]))
        conn.recv()
        tr.close()
    except Exception:
        conn.send(("fatal", rank, traceback.format_exc()))


def loopback(plan_name, versions=2, mode="shard"):
    plan = refit.Plan(plan_name)
    ctx = mp.get_context("fork")
    rconns, tconns, procs = [], [], []

    def recv(c, what):
        if not c.poll(120):
            raise AssertionError(f"{plan_name}: no answer from a {what} in 120 s")
        m = c.recv()
        if m[0] == "fatal":
            raise AssertionError(f"{plan_name}: {what} {m[1]} failed:\n{m[2]}")
        return m

    try:
        for r in range(plan.receivers):
            a, b = ctx.Pipe()
            procs.append(ctx.Process(target=receiver_proc, args=(plan_name, r, versions, mode == "blob", b)))
            procs[-1].start()
            rconns.append(a)
        addrs = {}
        for c in rconns:
            _, r, port, blob = recv(c, "receiver")
            addrs[r] = (port, blob)
        for t in range(plan.trainers):
            a, b = ctx.Pipe()
            procs.append(ctx.Process(target=trainer_proc, args=(plan_name, t, addrs, versions, mode, b)))
            procs[-1].start()
            tconns.append(a)
        for v in range(1, versions + 1):
            for c in rconns:
                assert recv(c, "receiver")[0:3:2] == ("ready", v)
            for c in tconns:
                c.send(("push", v))
            sent = sum(recv(c, "trainer")[3] for c in tconns)
            assert sent == v * plan.total_bytes, (sent, v * plan.total_bytes)
            for c in rconns:
                _, r, vv, complete, bad, total, first, nver, nbytes = recv(c, "receiver")
                assert complete >= v and bad == 0, f"{plan_name} v{v}: {bad} bytes differ; first: {first}"
                assert total == plan._p.receiver(r)[2] + sum(
                    i.bytes for i in plan.destinations(r).values() if i.side == 3), (r, total)
                assert nver == v and nbytes == v * plan._p.receiver(r)[2], (r, nver, nbytes)
        for c in tconns:
            c.send(("quit",))
    finally:
        for pr in procs:
            pr.join(20)
            if pr.is_alive():
                pr.kill()
                pr.join()
    bad = [pr.exitcode for pr in procs if pr.exitcode != 0]
    assert not bad, f"{plan_name}: processes exited with {bad}"


def test_loopback_bf16_module():
    loopback("qwen3_tiny_tp2", mode="module")


def test_loopback_bf16_direct():
    loopback("qwen3_tiny_tp2", mode="direct")


def test_loopback_fp8_kv_replicated():
    loopback("qwen3_tiny_fp8_tp4")


def test_loopback_fp8_experts_ep():
    loopback("qwen3_moe_tiny_ep2")


def test_loopback_glm_mla_blobs():
    loopback("glm_tiny_demo", mode="blob")


def test_loopback_glm_hsdp_ue8m0():
    loopback("glm_tiny_rep2")


TESTS = [
    test_library,
    test_source_lookups,
    test_ranks,
    test_binding_plan,
    test_reference_matches_tables,
    test_bind_refusals,
    test_wait_releases_gil,
    test_loopback_bf16_module,
    test_loopback_bf16_direct,
    test_loopback_fp8_kv_replicated,
    test_loopback_fp8_experts_ep,
    test_loopback_glm_mla_blobs,
    test_loopback_glm_hsdp_ue8m0,
]


def run_forked(fn, alarm_s=180):
    """fn in a child process (a crash or hang fails that test alone)"""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        signal.alarm(alarm_s)
        code = 0
        try:
            fn()
        except Exception:
            traceback.print_exc(file=sys.stdout)
            code = 1
        sys.stdout.flush()
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    if os.WIFSIGNALED(st):
        print(f"  killed by signal {os.WTERMSIG(st)}")
    return os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0


def main():
    only = sys.argv[1:]
    passed = failed = 0
    for t in TESTS:
        if only and t.__name__ not in only:
            continue
        t0 = time.monotonic()
        ok = run_forked(t)
        print(f"{'ok  ' if ok else 'FAIL'} {t.__name__} ({time.monotonic() - t0:.1f} s)")
        passed, failed = passed + ok, failed + (not ok)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
