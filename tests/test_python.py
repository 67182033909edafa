"""test_python.py: the refit Python module with numpy arrays (no GPU, no torch).

Lookups against the tables, every typed-bind refusal with its exact message, the shared library's
exports, and loopback pushes between processes (receivers listen on 127.0.0.1, trainers connect or
import blobs, UCX over tcp) whose every destination byte is compared with tests/engine_ref.py, an
independent numpy computation of the engine format from the full HF state dict. Run by
tests/test_python.sh (PYTHONPATH=build/python); prints one ok/FAIL line per test and
'N passed, N failed'.
"""
import importlib.util
import json
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
import refit.sglang
import refit.vllm



def _load(name, path):
    """a helper module by path (tests/ is not put on sys.path: its vllm/ would shadow vLLM)"""
    spec = importlib.util.spec_from_file_location(name, path)
    sys.modules[name] = mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


HERE = os.path.dirname(os.path.abspath(__file__))
if HERE in sys.path:  # python puts the script's directory first
    sys.path.remove(HERE)
engine_ref = _load("engine_ref", f"{HERE}/engine_ref.py")
standins = _load("standins", f"{HERE}/vllm/standins.py")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = 0x5EC2E7
BF16, FP8 = ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn


def expect_raises(cls, fn, message, status_name=None):
    try:
        fn()
    except cls as e:
        assert message is None or str(e) == message, f"message\n  got:  {e}\n  want: {message}"
        if status_name is not None:
            assert e.status_name == status_name, f"status {e.status_name}, want {status_name}"
        return e
    raise AssertionError(f"no {cls.__name__} raised (want: {message})")


# ------------------------------------------------------------------------------------------------
# the reference's inputs: the model's config, what the plan's Lua file says of its trainer,
# quantization and engine

def plan_options(plan):
    return engine_ref.plan_options(f"{ROOT}/models/plans/{plan.name}.lua")


def family_of(plan):
    cfg = engine_ref.model_config(f"{ROOT}/models/{plan.model}.lua")
    return cfg["family"], cfg


def hf_spec(plan):
    """{name: (shape, dtype)} of the trainer's modules, from the reference (not the tables)"""
    family, cfg = family_of(plan)
    return engine_ref.hf_sources(family, cfg, **plan_options(plan)["trainer"])


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
    return x.astype(BF16 if dtype in ("bf16", "bfloat16") else np.float32)


def state_dict(plan, version, sparse=False):
    """the full HF state dict of the plan's model, as the trainer's modules hold it unsharded; sparse:
    version 1's, with 1% of every tensor's values shrunk by 1-3% per later version (as a delta push sees;
    shrinking keeps most FP8 blocks' amax, so their scales, as small steps of real weights do)"""
    if not sparse or version == 1:
        return {n: source_data(n, shape, dt, version) for n, (shape, dt) in hf_spec(plan).items()}
    sd = state_dict(plan, 1)
    for n, a in sd.items():
        flat = a.reshape(-1)
        for u in range(2, version + 1):
            rng = np.random.default_rng([u, zlib.crc32(n.encode()), 1])
            idx = rng.choice(flat.size, max(1, flat.size // 100), replace=False)
            flat[idx] = (flat[idx].astype(np.float32) * rng.uniform(0.97, 0.99, size=idx.size)).astype(flat.dtype)
    return sd


def full_sources(plan):
    out = {}
    for r in range(plan.trainers):
        for n, i in plan.sources(r).items():
            out.setdefault(n, i)
    return out


def reference(plan, receiver, version, sd=None, sparse=False):
    family, cfg = family_of(plan)
    o = plan_options(plan)
    return engine_ref.engine_format(family, cfg, sd or state_dict(plan, version, sparse), tp=plan.tp, ep=plan.ep,
                                    position=plan._p.receiver(receiver)[1], fp8=o["fp8"],
                                    ue8m0=plan.scale_fmt == "ue8m0", engine=o["engine"], exclude=o["exclude"],
                                    requant=engine_ref.requant_of(plan, receiver))


def np_root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def np_geometry(a):
    """(shape, strides in elements, element offset into its root array, the root's id) of a numpy view"""
    root = np_root(a)
    ptr = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return tuple(a.shape), tuple(s // a.itemsize for s in a.strides), ptr // a.itemsize, id(root)


POISON = 0xA5


def poison(tensors):
    """fill every storage behind tensors (numpy arrays or stand-ins) with POISON: a byte never written shows"""
    for t in tensors.values():
        np_root(getattr(t, "a", t)).view(np.uint8)[...] = POISON


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


def compare(want, got):
    """(bytes that differ, bytes compared, bytes written, the first difference) of an engine's tensors
    against the reference: every tensor once (aliases are one), each derived view, padding rows left
    as poisoned"""
    bad, compared, written, first, seen = 0, 0, 0, None, set()
    for n, w in want.items():
        if id(w) in seen:
            continue
        seen.add(id(w))
        g = got[n]
        g = getattr(g, "a", g)
        assert g.shape == w.shape and g.dtype == w.dtype, (n, g.shape, g.dtype, w.shape, w.dtype)
        pad = want.pad_rows.get(n, 0)
        real = w.shape[0] - pad
        d = int((bits(g[:real]) != bits(w[:real])).sum())
        if pad:
            d += int((bits(g[real:]) != POISON).sum())
        if d and first is None:
            first = f"'{n}' differs in {d} of {w.nbytes} bytes" + (f" ({pad} padding rows)" if pad else "")
        bad, compared = bad + d, compared + w.nbytes
        if n not in want.derived:
            written += w[:real].nbytes
    return bad, compared, written, first


# ------------------------------------------------------------------------------------------------

def test_library():
    have = set(re.search(r"^plan_set = (.*)$", open(f"{ROOT}/config.ninja").read(), re.M).group(1).split())
    assert set(refit.plans()) == have, f"plans {refit.plans()}, configure chose {sorted(have)}"
    assert refit.ABI_VERSION == 7
    e = expect_raises(refit.Error, lambda: refit.Plan("nope"),
                      f"no plan 'nope' in this librefit.so (it has: {' '.join(refit.plans())}; "
                      f"./configure --plans=... chooses them)", "RF_ERR_ARG")
    assert e.status == 1 and e.version is None
    # exports: every function refit.h declares, and nothing but rf_* (no rf__ internals, no kernels)
    so = f"{ROOT}/build/librefit.so"
    syms = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True, check=True).stdout.split()
    exported = {s for s in syms[2::3]}
    declared = set(re.findall(r"\b(rf_\w+)\(", open(f"{ROOT}/runtime/include/refit.h").read()))
    declared |= set(re.findall(r"\b(rf_\w+)\(", open(f"{ROOT}/runtime/include/refit_plan.h").read()))
    assert declared - exported == set(), f"declared, not exported: {sorted(declared - exported)}"
    bad = sorted(s for s in exported if not s.startswith("rf_") or s.startswith("rf__"))
    assert not bad, f"exported beyond rf_*: {bad[:10]}"
    for p in refit.plans():
        assert f"rf_plan_{p}" in exported


def test_small_facts():
    """dtype sizes and FSDP2 shard rows come from the library (rf_dtype_size, rf_shard_rows): torch.chunk's
    cut, ceil(rows / shards) each, the trailing shards short or empty; a plan's sharded sources bind that"""
    assert [refit._itemsize(n) for n in ("bfloat16", "float32", "float8_e4m3fn")] == [2, 4, 1]
    cuts = {(5, 4): [(0, 2), (2, 2), (4, 1), (5, 0)], (8, 3): [(0, 3), (3, 3), (6, 2)],
            (6, 4): [(0, 2), (2, 2), (4, 2), (6, 0)], (0, 2): [(0, 0), (0, 0)], (7, 1): [(0, 7)]}
    for (rows, n), want in cuts.items():
        got = [refit._refit.shard_rows(rows, n, s) for s in range(n + 1)]
        assert got == want + [(rows, 0)], f"shard_rows({rows}, {n}, 0..{n}): {got}, want {want + [(rows, 0)]}"
    expect_raises(ValueError, lambda: refit._refit.shard_rows(5, 0, 0), "shard_rows(5, 0, 0): want rows >= 0, "
                  "1 <= shards < 2^32, 0 <= shard < 2^32 (a shard past the last is empty)")
    expect_raises(ValueError, lambda: refit._refit.dtype_size(7), "dtype 7 is none of refit's (bf16 1, fp32 2, fp8 3)")
    seen = 0
    for name in ("glm_tiny_demo", "qwen3_moe_tiny_ep2", "glm_tiny_rep2"):
        p = refit.Plan(name)
        for rank in range(p.trainers):
            shard = p._p.trainer(rank)[0]
            for n, i in p.sources(rank).items():
                if i.travel == "shard" and i.bytes:
                    seen += 1
                    want = refit._refit.shard_rows(i.shape[0], p.fsdp, shard)
                    assert (i.row0, i.rows) == want, f"{name} rank {rank} '{n}': binds {(i.row0, i.rows)}, want {want}"
    assert seen > 100, seen


def test_source_lookups():
    p = refit.Plan("qwen3_tiny_tp2")
    assert (p.fsdp, p.dp_replicate, p.trainers, p.tp, p.ep, p.replicas, p.receivers) == (2, 1, 2, 2, 1, 2, 4)
    e = p.source("model.embed_tokens.weight", 1)
    assert e == refit.TensorInfo("model.embed_tokens.weight", 0, 1, "bfloat16", (1024, 256), 512, 512, 262144, "shard",
                                 None, (256, 1), (), 0, 0, None, None), e
    assert e.bind_shape == (512, 256)
    # fused experts as transformers 5 holds them, fp32 masters: FSDP2 shard 1 of 2 binds experts 4..7
    f = refit.Plan("qwen3_moe_tiny_ep2").source("model.layers.1.mlp.experts.gate_up_proj", 1)
    assert (f.dtype, f.shape, f.row0, f.rows, f.bytes, f.stride, f.bind_shape) == \
        ("float32", (8, 256, 256), 4, 4, 4 * 256 * 256 * 4, (65536, 256, 1), (4, 256, 256)), f
    d = refit.Plan("qwen3_moe_tiny_ep2").source("model.layers.1.mlp.experts.down_proj", 0)
    assert (d.shape, d.row0, d.rows) == ((8, 256, 128), 0, 4), d
    pe = refit.Plan("qwen3_moe_tiny_per_expert").source("model.layers.0.mlp.experts.5.down_proj.weight", 1)
    assert (pe.shape, pe.row0, pe.rows, pe.dtype) == ((256, 128), 128, 128, "float32"), pe
    n0, n1 = p.source("model.layers.0.self_attn.q_norm.weight", 0), p.source("model.layers.0.self_attn.q_norm.weight", 1)
    assert (n0.travel, n0.owner, n0.bytes, n1.row0, n1.rows, n1.bytes, n1.shape) == ("gather", 1, 0, 0, 128, 256, (128,))
    assert "model.layers.0.self_attn.q_norm.weight" in p.sources(1) and "model.layers.0.self_attn.q_norm.weight" not in p.sources(0)
    expect_raises(refit.BindError, lambda: p.source("model.embed_token.weight"),
                  "plan 'qwen3_tiny_tp2' has no source tensor 'model.embed_token.weight'; close: "
                  "'model.embed_tokens.weight', 'model.norm.weight', 'model.layers.1.mlp.down_proj.weight'")
    # every plan: per replicate group that sends a tensor, shards partition its rows or one owner binds it whole
    for name in refit.plans():
        if name.startswith("megatron_"):
            continue  # each Megatron rank sends its own shards under one name: tests/test_megatron.sh
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
    uk, uv = g["model.layers.0.self_attn.W_UK_T"], g["model.layers.0.self_attn.W_UV"]
    assert (uk.shape, uk.side, uk.stride, uk.offset, uk.bytes, uk.storage, uk.view_of) == \
        ((2, 64, 128), 3, (128, 1, 256), 0, 65536, uk.id, None), uk
    assert (uv.shape, uv.stride, uv.offset, uv.bytes, uv.storage) == ((2, 128, 64), (128, 256, 1), 64, 0, uk.id), uv
    w13 = g["model.layers.1.mlp.experts.routed_experts.w13_weight"]
    assert (w13.shape, w13.dtype, w13.stride) == ((4, 512, 256), "float8_e4m3fn", (131072, 256, 1)), w13
    # aliases: the engine's other names of one tensor find it
    a = refit.Plan("glm_tiny_demo").destination("model.layers.1.mlp.experts.gate.weight", 1)
    assert a.name == "model.layers.1.mlp.gate.weight" and a.aliases == ("model.layers.1.mlp.experts.gate.weight",), a
    assert refit.Plan("glm_tiny_demo").destination("drafter.lm_head.weight", 0).name == "lm_head.weight"
    # a bf16 kv_b_proj: vLLM's views lie in its memory, nothing to bind
    b = refit.Plan("vllm_glm5_bf16_tp1").destinations(0)
    kv = b["model.layers.0.self_attn.kv_b_proj.weight"]
    v = b["model.layers.0.self_attn.W_UV"]
    assert (v.view_of, v.storage, v.bytes, v.offset, v.stride) == (kv.id, None, 0, 192 * 512, (229376, 1, 512)), v
    # vocabulary padding: 1000 rows padded to 1024 over TP2, rank 1's last 24 rows hold no weight
    e = refit.Plan("vllm_qwen3_v1000_bf16_tp2").destination("model.embed_tokens.weight", 1)
    assert (e.shape, e.pad_rows, e.bytes) == ((512, 256), 24, 512 * 256 * 2), e
    assert refit.Plan("vllm_qwen3_v1000_bf16_tp2").destination("model.embed_tokens.weight", 0).pad_rows == 0
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
    """the independent reference holds exactly the tables' tensors: the trainer's sources (names,
    shapes, dtypes) and, per receiver, the engine's (names, aliases, shapes, dtypes, strides, padding,
    derived views with their offsets and storages)"""
    DT = {"bf16": "bfloat16", "fp32": "float32"}
    for name in refit.plans():
        if name.startswith("megatron_"):
            continue  # Megatron-named sources, not HF: tests/test_megatron.sh (values.lua) checks their rows
        p = refit.Plan(name)
        table = {i[0]: (i[4], _DTYPES[i[3]]) for i in (p._p.describe(1, 0, k) for k in range(p.n_src))}
        spec = {n: (shape, DT[dt]) for n, (shape, dt) in hf_spec(p).items()}
        assert table == spec, (name, sorted(set(table.items()) ^ set(spec.items()))[:6])
        sd = state_dict(p, 1)
        for r in range(p.receivers):
            infos, ref = p.destinations(r), reference(p, r, 1, sd)
            dst = {i.id: n for n, i in infos.items() if i.side == 2}
            want = {n: (i.shape, i.dtype, i.stride, i.pad_rows, sorted(i.aliases)) for n, i in infos.items() if i.side == 2}
            got = {n: (ref[n].shape, ref[n].dtype.name, np_geometry(ref[n])[1], ref.pad_rows.get(n, 0),
                       sorted(ref.aliases.get(n, []))) for n in ref.names()}
            assert got == want, (name, r, sorted(set(got.items()) ^ set(want.items()), key=str)[:4])
            assert all(ref[a] is ref[n] for n, al in ref.aliases.items() for a in al)
            views = {n: i for n, i in infos.items() if i.side == 3}
            # finalize kernels' storages (not the engine's load-time views the reference builds): the
            # UE8M0 pack of an fp8 weight [rows, cols]'s scales is int32 [rows, ceil(ceil(cols/128)/4)]
            # MN-major with rows aligned to 4, named after the scales
            for step, scales, kind in p._p.finalize(r):
                if kind != 1:
                    continue
                i = views.pop(f"{scales}#ue8m0")
                # experts (moe_backend deep_gemm on SM100): [E, rows, cols], one group per expert
                w = ref[scales.replace("weight_scale_inv", "weight")].shape
                g, rows, cols = w if len(w) == 3 else (1,) + w
                mn, kw = (rows + 3) // 4 * 4, ((cols + 127) // 128 + 3) // 4
                shape, stride = ((g, rows, kw), (mn * kw, 1, mn)) if len(w) == 3 else ((rows, kw), (1, mn))
                assert (step, i.shape, i.stride, i.dtype, i.bytes, i.storage) == (
                    "ue8m0_pack", shape, stride, "int32", g * mn * kw * 4, i.id), (name, r, scales, i)
            assert set(views) == set(ref.derived), (name, r, set(views) ^ set(ref.derived))
            for n, i in views.items():
                shape, stride, off, root = np_geometry(ref[n])
                assert (shape, ref[n].dtype.name, stride, off) == (i.shape, i.dtype, i.stride, i.offset), (name, n)
                if i.view_of is not None:  # in the destination tensor's memory
                    assert ref.derived[n] == ("dst", dst[i.view_of]) and root == id(ref[dst[i.view_of]]), (name, n)
                else:  # in the storage bound through its first view
                    first = [m for m, j in views.items() if j.id == i.storage][0]
                    assert ref.derived[n] == ("storage", first) and root == np_geometry(ref[first])[3], (name, n)
                    assert i.bytes == (np_root(ref[n]).nbytes if n == first else 0), (name, n)


_DTYPES = {1: "bfloat16", 2: "float32", 3: "float8_e4m3fn"}


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


def test_bind_masters_and_fused_experts():
    """fp32 masters and transformers 5's fused experts: dtype, the whole tensor, the wrong shard"""
    tr = refit.Trainer(refit.Plan("qwen3_moe_tiny_ep2"), 1, token=TOKEN, ucx_tls="tcp")
    G = "tensor 'model.layers.0.mlp.experts.gate_up_proj' (source 10, trainer rank 1)"
    n = "model.layers.0.mlp.experts.gate_up_proj"
    expect_raises(refit.BindError, lambda: tr.bind(n, np.zeros((4, 256, 256), BF16)),
                  f"{G}: dtype bfloat16, expected float32 (the plan's source dtype)")
    expect_raises(refit.BindError, lambda: tr.bind(n, np.zeros((8, 256, 256), np.float32)),
                  f"{G}: shape [8, 256, 256], expected [4, 256, 256] (rows 4..7 of [8, 256, 256], FSDP shard 1 of 2): "
                  "the whole tensor, not this rank's shard")
    expect_raises(refit.BindError, lambda: tr.bind(n, np.zeros((4, 256, 256), np.float32), row0=0),
                  f"{G}: holds rows 0..3 of [8, 256, 256], this rank binds rows 4..7 (FSDP shard 1 of 2): the wrong shard")
    expect_raises(refit.BindError, lambda: tr.bind(n, np.zeros((4, 512, 128), np.float32)),
                  f"{G}: shape [4, 512, 128], expected [4, 256, 256] (rows 4..7 of [8, 256, 256], FSDP shard 1 of 2)")
    expect_raises(refit.BindError, lambda: tr.bind(n, np.zeros((4, 256, 512), np.float32)[:, :, ::2]),
                  f"{G}: strides [131072, 512, 2] (elements), expected [65536, 256, 1]: not row-major contiguous; "
                  "bind a contiguous copy")
    family, cfg = family_of(tr.plan)  # the same model with transformers 4.x's per-expert modules
    per_expert = {k: np.zeros(shape, np.float32)
                  for k, (shape, _) in engine_ref.hf_sources(family, cfg, experts="per_expert").items()}
    expect_raises(refit.BindError, lambda: tr.bind_module(per_expert),
                  "4 source(s) of plan 'qwen3_moe_tiny_ep2' not in the module, e.g. "
                  "'model.layers.0.mlp.experts.gate_up_proj', 'model.layers.0.mlp.experts.down_proj', "
                  "'model.layers.1.mlp.experts.gate_up_proj', 'model.layers.1.mlp.experts.down_proj'; the module holds "
                  "its experts one by one (transformers 4.x), the plan fused as transformers >= 5 does "
                  "(mlp.experts.gate_up_proj [E, 2I, H]): use a plan with trainer.experts = \"per_expert\"")
    tr.bind(n, np.zeros((4, 256, 256), np.float32), row0=4)
    tr.close()


def test_bind_engine_layouts():
    """Receiver.bind: aliases as one tensor, derived views in one storage at the table's strides and
    offsets, views of a bf16 kv_b_proj in its memory, padded vocabulary, what is still unbound"""
    p = refit.Plan("glm_tiny_demo")
    rx = refit.Receiver(p, 0, token=TOKEN, ucx_tls="tcp")
    good = p.engine_tensors(0)
    UK, UV = "model.layers.0.self_attn.W_UK_T", "model.layers.0.self_attn.W_UV"
    t = dict(good)
    t["drafter.lm_head.weight"] = np.zeros((512, 256), BF16)
    expect_raises(refit.BindError, lambda: rx.bind(t),
                  "tensor 'lm_head.weight' of plan 'glm_tiny_demo' (receiver 0) is one engine tensor under the names "
                  "'lm_head.weight', 'drafter.model.layers.3.shared_head.head.weight', 'drafter.lm_head.weight': "
                  f"'lm_head.weight' and 'drafter.lm_head.weight' are different tensors (at "
                  f"{good['lm_head.weight'].__array_interface__['data'][0]:#x}, shape [512, 256] and at "
                  f"{t['drafter.lm_head.weight'].__array_interface__['data'][0]:#x}, shape [512, 256])")
    t = dict(good)
    t["drafter.model.embed_tokens.weight"] = np.zeros((512, 256), np.float32)
    del t["model.embed_tokens.weight"]
    expect_raises(refit.BindError, lambda: rx.bind(t),
                  "tensor 'model.embed_tokens.weight' (dst 0, receiver 0): dtype float32, expected bfloat16 "
                  "(given as 'drafter.model.embed_tokens.weight')")
    t = dict(good)
    t[UK] = np.ascontiguousarray(good[UK])
    expect_raises(refit.BindError, lambda: rx.bind(t),
                  f"tensor '{UK}' (derived 0, receiver 0): strides [8192, 128, 1] (elements), expected [128, 1, 256]: "
                  "not the view of its storage that the plan's engine profile describes")
    st = np.zeros(32768, BF16)
    t = dict(good)
    t[UV] = np.ndarray((2, 128, 64), BF16, buffer=st, offset=0, strides=(256, 512, 2))
    expect_raises(refit.BindError, lambda: rx.bind(t),
                  f"tensor '{UV}' (derived 1, receiver 0): storage offset 0 (elements), expected 64: not the view of "
                  "its storage that the plan's engine profile describes")
    t[UV] = np.ndarray((2, 128, 64), BF16, buffer=st, offset=128, strides=(256, 512, 2))
    expect_raises(refit.BindError, lambda: rx.bind(t),
                  f"derived views '{UK}' and '{UV}' of plan 'glm_tiny_demo' (receiver 0) lie in one storage of 65536 "
                  f"bytes; the engine's lie in different storages (at "
                  f"{np_root(good[UK]).__array_interface__['data'][0]:#x} and {st.__array_interface__['data'][0]:#x})")
    big = np.zeros(65536, BF16)
    t = dict(good)
    t[UK] = np.ndarray((2, 64, 128), BF16, buffer=big, offset=0, strides=(256, 2, 512))
    expect_raises(refit.BindError, lambda: rx.bind(t),
                  f"derived view '{UK}' of plan 'glm_tiny_demo' (receiver 0) lies at element offset 0 of a storage of "
                  f"65536 bytes; the engine's storage is 131072 bytes at {big.__array_interface__['data'][0]:#x}, the "
                  f"view's storage start {big.__array_interface__['data'][0]:#x}")
    # nothing half-applied: each refusal above bound nothing
    assert len(rx.unbound) == len(p.destinations(0)), rx.unbound[:3]
    # a partial bind says what is left; the rest binds later (an alias given again, the same tensor)
    first = {n: good[n] for n in list(good)[:10]}  # embed_tokens under both names, then 8 more
    left = rx.bind(first)
    assert left == [n for n in p.destinations(0) if n not in first], left[:3]
    assert len(left) == len(p.destinations(0)) - 9 and "model.layers.0.self_attn.o_proj.weight" in left, left[:3]
    assert rx.bind(good) == [] and rx.unbound == []
    rx.listen("127.0.0.1")
    rx.close()

    # views of a bf16 kv_b_proj (vLLM's W_UK_T / W_UV lie in its memory): checked, nothing bound
    b = refit.Plan("vllm_glm5_bf16_tp1")
    rx = refit.Receiver(b, 0, token=TOKEN, ucx_tls="tcp")
    good = b.engine_tensors(0)
    K = "model.layers.0.self_attn.kv_b_proj.weight"
    UK, UV = "model.layers.0.self_attn.W_UK_T", "model.layers.0.self_attn.W_UV"
    t = dict(good)
    copy = good[K].copy()
    t[UV] = np.ndarray((4, 512, 256), BF16, buffer=copy, offset=192 * 512 * 2, strides=(229376 * 2, 2, 1024))
    expect_raises(refit.BindError, lambda: rx.bind(t),
                  f"derived view '{UV}' of plan 'vllm_glm5_bf16_tp1' (receiver 0) is a view of '{K}' at element offset "
                  f"98304; the engine's lies elsewhere (its storage at {copy.__array_interface__['data'][0]:#x}, '{K}' at "
                  f"{good[K].__array_interface__['data'][0]:#x}): a copy that updates of '{K}' never reach")
    expect_raises(refit.BindError, lambda: rx.bind({UK: good[UK]}),
                  f"derived view '{UK}' of plan 'vllm_glm5_bf16_tp1' (receiver 0) is a view of '{K}': bind '{K}' "
                  "with it or before it")
    i = b.destination(UK, 0)
    desc, _ = refit._describe(good[UK])
    assert rx._e.bind(3, i.id, desc, None) == \
        f"tensor '{UK}' (derived {i.id}): nothing to bind, a view of '{K}' (dst {i.view_of}) that changes with that tensor"
    assert rx.bind(good) == []
    rx.close()

    # the padded vocabulary: the engine's tensor has the padding rows
    v = refit.Plan("vllm_qwen3_v1000_bf16_tp2")
    rx = refit.Receiver(v, 1, token=TOKEN, ucx_tls="tcp")
    expect_raises(refit.BindError, lambda: rx.bind({"model.embed_tokens.weight": np.zeros((488, 256), BF16)}),
                  "tensor 'model.embed_tokens.weight' (dst 19, receiver 1): shape [488, 256], expected [512, 256]")
    rx.close()


# ------------------------------------------------------------------------------------------------
# the vLLM plug-in (refit.vllm) on stand-ins of vLLM's workers built from the dumps

DUMPS = f"{ROOT}/tests/vllm/dumps"


def standin_view(plan_name, rank, **changes):
    """EngineView of worker `rank` as the dump of plan_name's config records it, with changes"""
    tensors, settings = standins.load(standins.dump_of(plan_name, DUMPS), rank)
    assert settings.pop("engine") == "vllm"
    settings.update(changes)
    return refit.vllm.EngineView(tensors=tensors, device="cpu", **settings)


def table_view(plan, index, **settings):
    """EngineView of receiver `index` laid out from the tables (for plans without a dump)"""
    tensors = {}
    for n, a in plan.engine_tensors(index).items():
        root = np_root(a)
        tensors[n] = standins.StandIn(a, standins._Storage(root))
    return refit.vllm.EngineView(tensors=tensors, device="cpu", **settings)


def test_vllm_bind_every_dump():
    """every rank of every dump with a plan binds through refit.vllm: each table tensor by its name
    and aliases, MLA views in their storage, drafter; listen and export"""
    n = 0
    for name in refit.plans():
        dump = standins.dump_of(name, DUMPS)
        if not dump:
            continue
        p = refit.Plan(name)
        for r in range(p.receivers):
            b = refit.vllm.Binding(p, standin_view(name, r), token=TOKEN, host="127.0.0.1", ucx_tls="tcp")
            info = b.info()
            assert info["index"] == r and info["port"] > 0 and len(info["blob"]) > 100 and b.rx.unbound == [], info
            b.close()
            n += 1
    assert n == 29, n  # 22 SM90 bindings, 7 SM100 (vllm_*_sm100*: the int32 scales, kept fp32 buffers)


def test_vllm_refusals():
    """what a static table cannot follow is refused at bind, naming the setting"""
    Q, R = "vllm_qwen3moe_bf16_tp2", refit.vllm.Refused

    def refused(setting, message, plan=Q, view=None, **changes):
        e = expect_raises(R, lambda: refit.vllm.Binding(plan, view or standin_view(plan, 0, **changes), token=TOKEN,
                                                        ucx_tls="tcp"), f"vLLM {setting}: {message}")
        assert e.setting == setting and isinstance(e, refit.BindError)

    refused("version", "0.34.1; the tables of plan 'vllm_qwen3moe_bf16_tp2' follow the vllm profile, which covers "
            "0.33.x (parameter dumps of vLLM 0.33.0 on SM90)", version="0.34.1")
    refused("device capability", "SM100 (cpu); plan 'vllm_qwen3moe_bf16_tp2' follows the vllm profile for SM90 "
            "(H100/H200): elsewhere vLLM picks other kernels and layouts (on SM100 DeepGEMM packs FP8 scales into UE8M0 "
            "int32; use an SM100 plan, engine.sm = 100)", device_capability=(10, 0))
    refused("device capability", "no CUDA device (cpu); plan 'vllm_qwen3moe_bf16_tp2' follows the vllm profile for "
            "SM90 (H100/H200): elsewhere vLLM picks other kernels and layouts (on SM100 DeepGEMM packs FP8 scales into "
            "UE8M0 int32; use an SM100 plan, engine.sm = 100)", device_capability=None)
    refused("moe_backend", "'model.layers.0.mlp.experts.routed_experts' runs FlashInferExperts, which may repack or "
            "reorder the expert weights after loading; the tables of plan 'vllm_qwen3moe_bf16_tp2' hold them as "
            "TritonExperts does (serve with --moe-backend triton)",
            moe_kernels={"model.layers.0.mlp.experts.routed_experts": "FlashInferExperts"})
    refused("enable_eplb", "EPLB moves experts between ranks at run time; the tables place them statically (serve "
            "with enable_eplb off)", enable_eplb=True)
    refused("num_redundant_experts", "2 redundant experts; the tables hold each expert once", num_redundant_experts=2)
    refused("enable_sleep_mode", "sleep mode frees and re-maps the weights (CUDA virtual memory): bound addresses do "
            "not survive it", sleep_mode=True)
    refused("CuMemAllocator", "the weights live in CuMemAllocator (CUDA virtual memory) pools, which sleep mode "
            "unmaps; refit binds plain cudaMalloc memory", cumem_allocator=True)
    refused("PYTORCH_CUDA_ALLOC_CONF expandable_segments", "expandable segments map the weights through CUDA virtual "
            "memory, which RDMA registration cannot pin safely (unset it for the engine)", expandable_segments=True)
    refused("VLLM_USE_DEEP_GEMM_E8M0", "the engine uses DeepGEMM's UE8M0 scales; plan 'vllm_qwen3moe_bf16_tp2' writes "
            "fp32 scales (set VLLM_USE_DEEP_GEMM_E8M0=0 or use a plan with scale_fmt = \"ue8m0\")", deep_gemm_e8m0=True)
    refused("tensor_parallel_size", "4; plan 'vllm_qwen3moe_bf16_tp2' has tp 2", tp_size=4)
    refused("enable_expert_parallel", "expert parallel size 2; plan 'vllm_qwen3moe_bf16_tp2' has ep 1 (experts split "
            "by TP)", ep_size=2)
    refused("expert_placement_strategy", "'model.layers.0.mlp.experts.routed_experts' on EP rank 0 holds experts "
            "[0, 1, 2]; plan 'vllm_qwen3moe_bf16_tp2' places [0, 1, 2, 3] there (linear placement of 4 experts over "
            "1 EP ranks)", expert_maps={"model.layers.0.mlp.experts.routed_experts": (4, [0, 1, 2])})
    # expert parallelism (a plan without a dump: the engine laid out from its tables)
    ep = refit.Plan("qwen3_moe_tiny_ep2")
    E = "model.layers.1.mlp.experts.routed_experts"
    refused("expert_placement_strategy", "'round_robin'; plan 'qwen3_moe_tiny_ep2' places experts 'linear'", ep,
            table_view(ep, 0, tp_size=2, ep_size=2, expert_placement="round_robin"))
    refused("expert_placement_strategy", f"'{E}' on EP rank 1 holds experts [1, 3, 5, 7]; plan 'qwen3_moe_tiny_ep2' "
            "places [4, 5, 6, 7] there (linear placement of 8 experts over 2 EP ranks)", ep,
            table_view(ep, 1, tp_size=2, tp_rank=1, ep_size=2, ep_rank=1, expert_maps={E: (8, [1, 3, 5, 7])}))
    b = refit.vllm.Binding(ep, table_view(ep, 1, tp_size=2, tp_rank=1, ep_size=2, ep_rank=1,
                                          expert_maps={E: (8, [4, 5, 6, 7])}), token=TOKEN, ucx_tls="tcp")
    assert b.index == 1
    b.close()
    # tensors: a renamed FP8 scale, a missing drafter, a tensor inside a larger storage
    F = "vllm_qwen3_fp8_tp1"
    v = standin_view(F, 0)
    S = "model.layers.0.self_attn.qkv_proj.weight_scale"
    v.tensors[S] = v.tensors.pop(S + "_inv")
    refused("FP8 kernel path", "the engine names the scales of 'model.layers.0.self_attn.qkv_proj.weight' "
            f"'{S}', the vllm profile's kernels 'weight_scale_inv' (another kernel that may hold them in another format)",
            F, v)
    D = "vllm_dsv3_fp8_tp1"
    v = standin_view(D, 0)
    v.tensors = {n: t for n, t in v.tensors.items() if not n.startswith("drafter.")}
    expect_raises(refit.BindError, lambda: refit.vllm.Binding(D, v, token=TOKEN, ucx_tls="tcp"),
                  "28 tensor(s) of plan 'vllm_dsv3_fp8_tp1' (receiver 0) not among the engine's parameters, e.g. "
                  "'drafter.model.layers.3.mtp_block.self_attn.fused_qkv_a_proj.weight', "
                  "'drafter.model.layers.3.mtp_block.self_attn.fused_qkv_a_proj.weight_scale_inv', "
                  "'drafter.model.layers.3.mtp_block.self_attn.q_a_layernorm.weight'; the engine has no MTP drafter "
                  "here (the weight-transfer backend sees the target model only: bind through the worker extension, "
                  "refit.vllm.bind)")
    v = standin_view(D, 0)
    N = "model.norm.weight"
    big = standins._Storage(np.zeros(1024, np.uint8))
    v.tensors[N] = standins.StandIn(np.ndarray((256,), BF16, buffer=big.buf, offset=512), big)
    expect_raises(refit.BindError, lambda: refit.vllm.Binding(D, v, token=TOKEN, ucx_tls="tcp"),
                  f"tensor '{N}' of plan 'vllm_dsv3_fp8_tp1' (receiver 0) is a whole storage of 512 bytes; the "
                  "engine's lies at element offset 256 of a storage of 1024 bytes (another layout than the tables')")
    # the drafter's head a copy of the target's, W_UV out of its storage: Receiver.bind refuses, naming both
    v = standin_view(D, 0)
    H = "drafter.lm_head.weight"
    own = standins._Storage(np.zeros(262144, np.uint8))
    v.tensors[H] = standins.StandIn(np.ndarray((512, 256), BF16, buffer=own.buf), own)
    e = expect_raises(refit.BindError, lambda: refit.vllm.Binding(D, v, token=TOKEN, ucx_tls="tcp"), None)
    assert str(e).startswith("tensor 'lm_head.weight' of plan 'vllm_dsv3_fp8_tp1' (receiver 0) is one engine tensor "
                             "under the names 'lm_head.weight', 'drafter.model.layers.3.shared_head.head.weight', "
                             "'drafter.lm_head.weight': "), e
    v = standin_view(D, 0)
    U = "model.layers.0.self_attn.mla_attn.mla_attn.W_UV"
    other = standins._Storage(np.zeros(1048576, np.uint8))
    v.tensors[U] = standins.StandIn(np.ndarray((4, 512, 128), BF16, buffer=other.buf, offset=256,
                                               strides=(512, 2048, 2)), other)
    e = expect_raises(refit.BindError, lambda: refit.vllm.Binding(D, v, token=TOKEN, ucx_tls="tcp"), None)
    assert str(e).startswith("derived views 'model.layers.0.self_attn.mla_attn.mla_attn.W_UK_T' and "
                             f"'{U}' of plan 'vllm_dsv3_fp8_tp1' (receiver 0) lie in one storage of 1048576 bytes; the "
                             "engine's lie in different storages"), e


class FakeLLM:
    """what refit.vllm.bind / update call of an LLM: collective_rpc, each worker's call in its own
    thread as vLLM's workers run in their own processes"""

    def __init__(self, workers):
        self.workers = workers

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        out, errs = [None] * len(self.workers), []

        def run(i, w):
            try:
                out[i] = getattr(w, method)(*args, **(kwargs or {}))
            except Exception as e:  # noqa: BLE001 (vLLM re-raises a worker's exception in the driver)
                errs.append(e)
        ths = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(self.workers)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        if errs:
            raise errs[0]
        return out


def test_vllm_driver():
    """the worker extension through collective_rpc, without vLLM: bind every worker, trainers import
    the blobs and push, update arms and waits on every worker; a version nobody pushes times out on
    each, named in the error; import refit.vllm needs no vLLM"""
    assert "vllm" not in sys.modules
    expect_raises(ModuleNotFoundError, lambda: refit.vllm.RefitWeightTransferEngine, "No module named 'vllm'")
    name = "vllm_qwen3_bf16_tp2"
    plan = refit.Plan(name)

    class Worker(refit.vllm.WorkerExtension):
        def __init__(self, rank):
            self.rank = rank

        def refit_view(self):
            view = standin_view(name, self.rank)
            self.tensors = view.tensors  # the engine's tensors, to compare after the update
            return view

    workers = [Worker(r) for r in range(plan.tp)]
    llm = FakeLLM(workers)
    infos = refit.vllm.bind(llm, name, TOKEN, host="127.0.0.1", ucx_tls="tcp", timeout_ms=15000)
    assert [i["index"] for i in infos] == [0, 1]
    for w in workers:
        poison(w.tensors)
    ctx = mp.get_context("fork")
    conns, procs = [], []
    addrs = {i["index"]: (i["port"], i["blob"]) for i in infos}
    for t in range(plan.trainers):
        a, b = ctx.Pipe()
        procs.append(ctx.Process(target=trainer_proc, args=(name, t, addrs, 1, "blob", b)))
        procs[-1].start()
        conns.append(a)
    try:
        for c in conns:
            c.send(("push", 1))
        res = refit.vllm.update(llm, 1, timeout=60)
        assert [(r["index"], r["complete"], r["torn"]) for r in res] == [(0, 1, None), (1, 1, None)], res
        for c in conns:
            assert c.poll(60) and c.recv()[:3] == ("pushed", conns.index(c), 1)
            c.send(("quit",))
        for i, w in zip(infos, workers):
            bad, _, written, first = compare(reference(plan, i["index"], 1), w.tensors)
            assert bad == 0 and written == plan._p.receiver(i["index"])[2], (i["index"], bad, first)
        e = expect_raises(refit.TimeoutError, lambda: refit.vllm.update(llm, 2, timeout=0.3),
                          "version 2 not complete on receiver(s) 0: version 2 not complete after 300 ms (newest "
                          "complete 1); 1: version 2 not complete after 300 ms (newest complete 1)")
        assert e.version == 2
    finally:
        for pr in procs:
            pr.join(20)
    for w in workers:
        w.refit_close()


# ------------------------------------------------------------------------------------------------
# the SGLang plug-in (refit.sglang) on stand-ins of SGLang's TP workers built from tests/sglang/dumps

SGL_DUMPS = f"{ROOT}/tests/sglang/dumps"


def sglang_view(plan_name, rank, **changes):
    """EngineView of SGLang TP worker `rank` as the dump of plan_name's config records it, with changes"""
    tensors, settings = standins.load(standins.dump_of(plan_name, SGL_DUMPS), rank)
    assert settings.pop("engine") == "sglang"
    settings.update(changes)
    return refit.sglang.EngineView(tensors=tensors, device="cpu", **settings)


def test_sglang_bind_every_dump():
    """every rank of every SGLang dump with a plan binds through refit.sglang by the model's own
    parameter names; MLA models (w_kc / w_vc in the dump) with the model's post_load_weights as the
    finalize hook of the plan's sglang_mla_post_load steps: one per attention module holding w_kc /
    w_vc, on its kv_b_proj, and none without MLA"""
    n, mla = 0, []
    for name in refit.plans():
        dump = standins.dump_of(name, SGL_DUMPS)
        if not dump:
            continue
        p = refit.Plan(name)
        for r in range(p.receivers):
            view = sglang_view(name, r)
            if view.mla_derived:
                mla.append(name)
            b = refit.sglang.Binding(p, view, token=TOKEN, host="127.0.0.1", ucx_tls="tcp",
                                     post_load_weights=(lambda **kw: None) if view.mla_derived else None)
            attn = sorted({a.rsplit(".", 1)[0] for a in view.mla_derived}, key=lambda a: int(a.split(".")[2]))
            steps = b.rx.finalize_steps()
            assert steps == [("sglang_mla_post_load", a + ".kv_b_proj.weight", "engine") for a in attn], (name, steps)
            assert (b.finalize is not None) == bool(attn), name
            info = b.info()
            assert info["index"] == r and info["port"] > 0 and len(info["blob"]) > 100 and b.rx.unbound == [], info
            assert set(b.rx.tensors) <= set(view.tensors), name
            b.close()
            n += 1
    assert n == 20, n  # 8 TP1 dumps, 6 TP2 ones (one with EP2) of 2 ranks
    assert sorted(set(mla)) == ["sglang_dsv3_bf16_tp1", "sglang_dsv3_bf16_tp2", "sglang_dsv3_fp8_tp1",
                                "sglang_dsv3_fp8_tp2", "sglang_glm5_bf16_tp1", "sglang_glm5_bf16_tp2",
                                "sglang_glm5_fp8_tp1"], mla


def test_sglang_refusals():
    """what a static table cannot follow in SGLang is refused at bind, naming the setting"""
    Q, D, R = "sglang_qwen3moe_fp8_tp1", "sglang_dsv3_fp8_tp1", refit.sglang.Refused

    def refused(setting, message, plan=Q, post_load_weights=None, **changes):
        e = expect_raises(R, lambda: refit.sglang.Binding(plan, sglang_view(plan, 0, **changes), token=TOKEN,
                                                          ucx_tls="tcp", post_load_weights=post_load_weights),
                          f"SGLang {setting}: {message}")
        assert e.setting == setting
    refused("version", "0.5.24; the tables of plan 'sglang_qwen3moe_fp8_tp1' follow the sglang profile, which covers "
            "0.5.23 (parameter dumps of SGLang 0.5.23 on SM90)", version="0.5.24")
    refused("device capability", "SM100 (cpu); the sglang profile covers SM90 (H100/H200): elsewhere SGLang picks other "
            "kernels and layouts (on SM100 DeepGEMM requantizes FP8 scales to UE8M0 in place)", device_capability=(10, 0))
    refused("DeepGEMM UE8M0 scales", "SGLang requantizes block-FP8 scales to UE8M0 in place after loading "
            "(DEEPGEMM_SCALE_UE8M0); the tables write the fp32 scales as loaded", deepgemm_scale_ue8m0=True)
    refused("moe_runner_backend", "'flashinfer_trtllm': the tables hold the experts as the triton runner does "
            "(w13_weight / w2_weight as loaded); other backends may repack them (serve with --moe-runner-backend "
            "triton)", moe_runner_backend="flashinfer_trtllm")
    refused("quantization backend", "'model.layers.0.mlp.experts' runs CompressedTensorsW4A4MoEMethod, which repacks "
            "its weights after loading and restores them for an update; the tables write the loaded layout into the "
            "packed memory", repacking={"model.layers.0.mlp.experts": "CompressedTensorsW4A4MoEMethod"})
    refused("enable_eplb", "EPLB moves experts between ranks at run time; the tables place them statically (serve "
            "with enable_eplb off)", enable_eplb=True)
    refused("ep_num_redundant_experts", "2 redundant experts; the tables hold each expert once",
            ep_num_redundant_experts=2)
    refused("shared experts fusion", "1 shared expert(s) appended to the routed experts' w13_weight / w2_weight; the "
            "tables hold them as mlp.shared_experts (serve with --disable-shared-experts-fusion)",
            plan=D, shared_experts_fused=1)
    # a dense model runs no MoE kernel: any backend setting binds
    refit.sglang.Binding("sglang_qwen3_fp8_tp1", sglang_view("sglang_qwen3_fp8_tp1", 0, moe_runner_backend="auto"),
                         token=TOKEN, ucx_tls="tcp").close()
    refused("weight_cache_mode", "'host': SGLang refuses in-place updates with a weight cache", weight_cache_mode="host")
    refused("enable_memory_saver", "release/resume_memory_occupation frees and re-maps the weights: bound addresses "
            "do not survive it", memory_saver=True)
    refused("dp_size", "2; the sglang profile covers one data-parallel rank per engine (SGLang's own distributed "
            "update requires dp_size 1)", dp_size=2)
    refused("tp_size", "2; plan 'sglang_qwen3moe_fp8_tp1' has tp 1", tp_size=2)
    refused("ep_size", "2; plan 'sglang_qwen3moe_fp8_tp1' has ep 1 (experts split by TP)", ep_size=2)
    refused("post_load_weights", "the model derives model.layers.0.self_attn.w_kc, model.layers.0.self_attn.w_vc ... "
            "from kv_b_proj after loading; the tables do not write them: the sglang_mla_post_load finalize steps of "
            "plan 'sglang_dsv3_fp8_tp1' ('model.layers.0.self_attn.kv_b_proj.weight', ...) need the model's "
            "post_load_weights", plan=D)
    # a model deriving w_kc / w_vc under a plan without the steps (a dense Qwen3 plan here)
    refused("post_load_weights", "the model derives layers.0.self_attn.w_kc ... from kv_b_proj after loading; "
            "receiver 0 of plan 'sglang_qwen3_fp8_tp1' has no sglang_mla_post_load finalize step to rebuild them "
            "(tables generated before the sglang profile had it?)", plan="sglang_qwen3_fp8_tp1",
            post_load_weights=lambda **kw: None, mla_derived=("layers.0.self_attn.w_kc",))
    # a vLLM plan's names are not SGLang's
    v = sglang_view(Q, 0)
    expect_raises(refit.BindError, lambda: refit.sglang.Binding("vllm_qwen3moe_fp8_tp1", v, token=TOKEN, ucx_tls="tcp"),
                  "10 tensor(s) of plan 'vllm_qwen3moe_fp8_tp1' (receiver 0) not among the engine's parameters, e.g. "
                  "'model.layers.0.mlp.gate.weight_scale_inv', 'model.layers.0.mlp.experts.routed_experts.w13_weight', "
                  "'model.layers.0.mlp.experts.routed_experts.w13_weight_scale_inv' (close: "
                  "'model.layers.0.mlp.experts.w2_weight_scale_inv')")


# quant method classes by SGLang 0.5.23's names (refit.sglang.repacking reads class names and qualnames)
class QuantizeMethodBase:
    def restore_weights_before_loading(self, layer):  # the base class's no-op
        pass


class UnquantizedLinearMethod(QuantizeMethodBase):
    pass


class UnquantizedFusedMoEMethod(QuantizeMethodBase):
    def __init__(self, trtllm):
        self.use_flashinfer_trtllm_moe = trtllm

    def restore_weights_before_loading(self, layer):  # restores only with FlashInfer's TRT-LLM MoE
        pass


class CompressedTensorsMoEMethod(QuantizeMethodBase):
    def restore_weights_before_loading(self, layer):  # always repacks
        pass


def test_sglang_cpu_platform():
    """a worker on SGLang's CPU platform binds a bf16 TP1 plan without MLA (engine.device = "cpu"); a CPU
    with AMX and the plans the CPU platform does not cover are refused by name"""
    R, Q = refit.sglang.Refused, "sglang_qwen3_bf16_tp1"

    def cpu_view(plan, **changes):
        return sglang_view(plan, 0, platform="cpu", device_capability=None, **changes)

    def refused(setting, message, plan, view_plan=None, **changes):
        e = expect_raises(R, lambda: refit.sglang.Binding(plan, cpu_view(view_plan or plan, **changes), token=TOKEN,
                                                          ucx_tls="tcp"), f"SGLang {setting}: {message}")
        assert e.setting == setting
    for plan in ("sglang_qwen3_bf16_tp1_cpu", "sglang_qwen3moe_bf16_tp1_cpu"):
        b = refit.sglang.Binding(plan, cpu_view(plan.replace("_cpu", "")), token=TOKEN, ucx_tls="tcp")
        assert b.index == 0 and b.port > 0, (b.index, b.port)
        b.close()
    refused("CPU AMX", "cpu has AMX: SGLang 0.5.23 repacks every bf16 linear and MoE weight after loading there "
            "(layers/quantization/unquant.py:569 and :874, _amx_process_weight_after_loading -> layers/amx_utils.py, "
            "a new Parameter from sgl_kernel.convert_weight_packed); the tables write the loaded layout (the sglang "
            "CPU platform covers CPUs without AMX)", "sglang_qwen3_bf16_tp1_cpu", Q, cpu_amx=True)
    refused("device", "cpu: plan 'sglang_qwen3_fp8_tp1' writes FP8 ('model.layers.0.self_attn.qkv_proj.weight', ...); "
            "SGLang's CPU FP8 linear needs AMX and repacks the weights (layers/quantization/fp8.py, Fp8LinearMethod): "
            "the sglang CPU platform covers bf16 plans", "sglang_qwen3_fp8_tp1")
    refused("device", "cpu: plan 'sglang_dsv3_bf16_tp1' has MLA ('model.layers.0.self_attn.fused_qkv_a_proj_with_mqa"
            ".weight', ...); SGLang 0.5.23's CPU attention (torch_native) fails on MLA's first prefill: the sglang CPU "
            "platform covers models without MLA", "sglang_dsv3_bf16_tp1")
    refused("device", "cpu: plan 'sglang_qwen3_bf16_tp2' has tp 2 ep 1; the sglang CPU platform covers TP1 (SGLang's "
            "CPU TP2 needs PyNccl disabled; no real engine ran it with refit)", "sglang_qwen3_bf16_tp2")
    # a CPU device outside SGLang's CPU platform is still refused as not SM90
    e = expect_raises(R, lambda: refit.sglang.Binding(Q, sglang_view(Q, 0, device_capability=None), token=TOKEN,
                                                      ucx_tls="tcp"), None)
    assert e.setting == "device capability", e


def test_sglang_repacking():
    """which quant methods of a live SGLang worker count as repacking (EngineView.from_model; refused
    at bind): SGLang's UnquantizedFusedMoEMethod, on every bf16 MoE layer, overrides
    restore_weights_before_loading but repacks only with FlashInfer's TRT-LLM MoE, and every bf16 MoE
    model was refused (seen on a live CPU engine, tests/sglang/live_probe.py)"""
    class Module:
        def __init__(self, qm):
            self.quant_method = qm
    mods = [("lm_head", Module(UnquantizedLinearMethod())), ("layers.0.mlp.experts", Module(UnquantizedFusedMoEMethod(False))),
            ("layers.0.input_layernorm", Module(None)), ("model", object())]
    assert refit.sglang.repacking(mods) == {}, refit.sglang.repacking(mods)
    mods += [("layers.1.mlp.experts", Module(UnquantizedFusedMoEMethod(True))), ("layers.2.mlp.experts",
                                                                                Module(CompressedTensorsMoEMethod()))]
    assert refit.sglang.repacking(mods) == {"layers.1.mlp.experts": "UnquantizedFusedMoEMethod",
                                            "layers.2.mlp.experts": "CompressedTensorsMoEMethod"}, refit.sglang.repacking(mods)


class FakeSGLang:
    """what refit.sglang.bind / update call of an sglang.Engine: the weight-update session (begin /
    end, update_weights_from_tensor only inside it, as SGLang 0.5.23 checks), pause / continue, and
    the custom weight loader run in every TP worker (a thread each, as SGLang's workers are processes)"""

    def __init__(self, models):
        self.models, self.calls, self.open = models, [], False

    def begin_weight_update(self):
        self.calls.append("begin")
        if self.open:
            return False, "a weight update session is already open"
        self.open = True
        return True, "Success"

    def end_weight_update(self):
        self.calls.append("end")
        ok, self.open = self.open, False
        return ok, "Success" if ok else "no weight update session is open"

    def pause_generation(self, mode):
        self.calls.append("pause " + mode)

    def continue_generation(self):
        self.calls.append("continue")

    def update_weights_from_tensor(self, named_tensors, load_format=None):
        self.calls.append("tensor " + json.loads(named_tensors[0][0].partition(":")[2])["op"])
        if not self.open:
            return False, "update_weights_from_tensor must run between begin_weight_update() and end_weight_update()"
        assert load_format == refit.sglang.HOOK, load_format
        errs = []

        def run(m):
            try:
                refit.sglang.worker_call(m, named_tensors)
            except Exception as e:  # noqa: BLE001
                errs.append(e)
        ths = [threading.Thread(target=run, args=(m,)) for m in self.models]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        return (False, str(errs[0])) if errs else (True, "Success")


class StandInModel:
    """an SGLang model in a TP worker: its view (the dump's parameters) and post_load_weights (SGLang
    0.5.23's signature), which records where it ran (inside the receiver's finalize hook, where a
    call into the receiver raises: before the version is complete; else the newest complete
    version) and the weight names it was given; fail: raise at those calls (1 = the first)"""

    def __init__(self, plan_name, rank, fail=()):
        self.view = sglang_view(plan_name, rank)
        self.post_loads, self.fail = [], fail

    def refit_view(self):
        return self.view

    def post_load_weights(self, is_nextn=False, weight_names=None):
        try:
            where = refit.sglang._binding.rx.poll().complete
        except refit.Error as e:
            assert "a call into the receiver from inside its finalize hook" in str(e), e
            where = "finalize"
        self.post_loads.append((where, is_nextn, weight_names))
        if len(self.post_loads) in self.fail:
            raise RuntimeError(f"w_kc / w_vc rebuild failed (call {len(self.post_loads)})")


def test_sglang_driver():
    """refit.sglang.bind / update through SGLang's calls, without SGLang: bind inside a session, trainers
    import the blobs and push; update pauses generation, opens the session, every worker arms and waits
    while its receiver runs post_load_weights (MLA's w_kc / w_vc) for the plan's kv_b_proj layers before
    the version is complete, ends the session and continues; a version nobody pushes times out named,
    generation left paused; refusals come back by name; import refit.sglang needs no SGLang"""
    assert "sglang" not in sys.modules
    refit.sglang._command_tensor = lambda: None  # no torch here: the fake engine reads only the name
    name = "sglang_dsv3_fp8_tp1"
    plan = refit.Plan(name)
    model = StandInModel(name, 0)
    eng = FakeSGLang([model])
    tmp = f"/tmp/refit_sglang_{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    bad = StandInModel(name, 0)
    bad.view.moe_runner_backend = "deep_gemm"
    e = expect_raises(refit.sglang.Refused, lambda: refit.sglang.bind(FakeSGLang([bad]), name, TOKEN, info_dir=tmp,
                                                                      tp_size=1, ucx_tls="tcp"), None)
    assert e.setting == "moe_runner_backend" and str(e).startswith("TP worker 0: Refused: SGLang moe_runner_backend: "
                                                                    "'deep_gemm': the tables hold"), str(e)
    infos = refit.sglang.bind(eng, name, TOKEN, info_dir=tmp, tp_size=1, host="127.0.0.1", ucx_tls="tcp",
                              timeout_ms=15000)
    assert eng.calls == ["begin", "tensor bind", "end"] and [i["index"] for i in infos] == [0], (eng.calls, infos)
    poison(model.view.tensors)
    ctx = mp.get_context("fork")
    conns, procs = [], []
    addrs = {i["index"]: (i["port"], i["blob"]) for i in infos}
    for t in range(plan.trainers):
        a, b = ctx.Pipe()
        procs.append(ctx.Process(target=trainer_proc, args=(name, t, addrs, 1, "blob", b)))
        procs[-1].start()
        conns.append(a)
    try:
        for c in conns:
            c.send(("push", 1))
        eng.calls.clear()
        res = refit.sglang.update(eng, 1, info_dir=tmp, tp_size=1, timeout=60)
        assert [(r["index"], r["complete"], r["torn"]) for r in res] == [(0, 1, None)], res
        assert eng.calls == ["pause retract", "begin", "tensor update", "end", "continue"], eng.calls
        kv_b = [f"model.layers.{i}.self_attn.kv_b_proj.weight" for i in range(3)]
        assert model.post_loads == [("finalize", False, kv_b)], model.post_loads
        assert res[0]["finalize_s"] > 0, res
        for c in conns:
            assert c.poll(60) and c.recv()[:3] == ("pushed", conns.index(c), 1)
            c.send(("quit",))
        bad_bytes, _, written, first = compare(reference(plan, 0, 1), model.view.tensors)
        assert bad_bytes == 0 and written == plan._p.receiver(0)[2], (bad_bytes, first)
        eng.calls.clear()
        e = expect_raises(refit.TimeoutError, lambda: refit.sglang.update(eng, 2, info_dir=tmp, tp_size=1, timeout=0.3),
                          "version 2 not complete on receiver(s) 0: version 2 not complete after 300 ms (newest "
                          "complete 1)")
        assert e.version == 2 and len(model.post_loads) == 1, model.post_loads
        assert eng.calls == ["pause retract", "begin", "tensor update", "end"], eng.calls
    finally:
        for pr in procs:
            pr.join(20)
        refit.sglang.worker_call(model, [(refit.sglang._CMD + json.dumps({"op": "close", "info_dir": tmp}), None)])
    assert refit.sglang._binding is None and "sglang" not in sys.modules


def test_sglang_post_load_fails():
    """a failing post_load_weights (the w_kc / w_vc rebuild of an MLA model) tears the version: it runs
    inside the receiver's finalize, before the version is complete, so the trainers' wait raises
    TornError naming the step and the error, the receiver never reports the version complete, and
    refit.sglang.update raises TornError with generation left paused; the next version completes"""
    refit.sglang._command_tensor = lambda: None
    name = "sglang_dsv3_fp8_tp1"
    plan = refit.Plan(name)
    model = StandInModel(name, 0, fail=(1,))
    eng = FakeSGLang([model])
    tmp = f"/tmp/refit_sglang_fail_{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    infos = refit.sglang.bind(eng, name, TOKEN, info_dir=tmp, tp_size=1, host="127.0.0.1", ucx_tls="tcp",
                              timeout_ms=30000)
    rx = refit.sglang._binding.rx
    trs, rng = [], np.random.default_rng(7)
    for rank in range(plan.trainers):
        tr = refit.Trainer(plan, rank, token=TOKEN, ucx_tls="tcp", timeout_ms=30000, progress_thread=True)
        for n, i in tr.sources.items():
            x = i.empty()
            x[...] = rng.standard_normal(x.shape).astype(x.dtype)
            tr.bind(n, x, row0=i.row0)
        tr.import_blob(infos[0]["blob"])
        trs.append(tr)
    kv_b = [f"model.layers.{i}.self_attn.kv_b_proj.weight" for i in range(3)]
    torn = ("finalize step 'sglang_mla_post_load' of 'model.layers.0.self_attn.kv_b_proj.weight' failed: "
            "RuntimeError: w_kc / w_vc rebuild failed (call 1)")
    try:
        for tr in trs:
            tr.push(1)
        eng.calls.clear()
        e = expect_raises(refit.TornError, lambda: refit.sglang.update(eng, 1, info_dir=tmp, tp_size=1, timeout=60),
                          None)
        assert str(e) == f"version 1 torn on receiver(s) 0: version 1 torn: {torn}" and e.version == 1, str(e)
        assert eng.calls == ["pause retract", "begin", "tensor update", "end"], eng.calls  # generation stays paused
        for tr in trs:
            expect_raises(refit.TornError, lambda: tr.wait(timeout=60),
                          f"version 1: receiver 0 (blob): version 1 torn: {torn}")
        assert model.post_loads == [("finalize", False, kv_b)], model.post_loads
        assert rx.poll().complete == 0 and rx.counters()["versions"] == 0, (rx.poll(), rx.counters())
        for tr in trs:  # the next version: post_load_weights succeeds, the version completes
            tr.push(2)
        eng.calls.clear()
        res = refit.sglang.update(eng, 2, info_dir=tmp, tp_size=1, timeout=60)
        assert [(r["complete"], r["torn"]) for r in res] == [(2, None)], res
        assert eng.calls == ["pause retract", "begin", "tensor update", "end", "continue"], eng.calls
        for tr in trs:
            assert tr.wait(timeout=60) == []
        assert model.post_loads == [("finalize", False, kv_b)] * 2, model.post_loads
    finally:
        for tr in trs:
            tr.close()
        refit.sglang.worker_call(model, [(refit.sglang._CMD + json.dumps({"op": "close", "info_dir": tmp}), None)])


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
    # dt >= 0.6 by the engine's clock; the upper limit only catches a hang
    assert 0.55 < dt < 60 and ticks[0] > 10000, (dt, ticks[0])
    assert rx.poll() == refit.VersionState(0, 0, 0, 0, ""), rx.poll()
    rx.arm(3)
    assert rx.poll() == refit.VersionState(0, 0, 3, 0, ""), rx.poll()
    rx.close()


U64 = 2**64


def test_version_and_token_range():
    """versions are 1 .. 2**64 - 2 and tokens 0 .. 2**64 - 1, else ValueError / OverflowError naming
    them: nothing wraps modulo 2**64 (arm(-1) armed 2**64 - 1, after which every later version was
    refused; arm(2**64 + 5) armed 5)"""
    plan = refit.Plan("qwen3_tiny_tp2")
    for tok in (-1, U64, U64 + 0x5EC2E7):
        for make in (lambda: refit.Receiver(plan, 0, token=tok, ucx_tls="tcp"),
                     lambda: refit.Trainer(plan, 0, token=tok, ucx_tls="tcp")):
            expect_raises(OverflowError, make, f"token {tok} is out of range: it must be 0 <= token <= {U64 - 1}")
    expect_raises(TypeError, lambda: refit.Receiver(plan, 0, token=1.5), "token must be an int, not float")
    rx = refit.Receiver(plan, 0, token=U64 - 1, ucx_tls="tcp")  # the largest token is a token
    rx.bind(plan.engine_tensors(0))
    rx.listen("127.0.0.1")
    want = f"it must be 1 <= version <= {U64 - 2}"
    for v, cls in ((-1, OverflowError), (0, ValueError), (U64 - 1, ValueError), (U64, OverflowError),
                   (U64 + 5, OverflowError)):
        expect_raises(cls, lambda: rx.arm(v), f"version {v} is out of range: {want}")
        expect_raises(cls, lambda: rx.wait(v, timeout=0.1), f"version {v} is out of range: {want}")
    assert rx.poll() == refit.VersionState(0, 0, 0, 0, ""), rx.poll()  # nothing armed
    rx.arm(U64 - 2)
    assert rx.poll().armed == U64 - 2, rx.poll()
    rx.close()
    tr = refit.Trainer(plan, 0, token=TOKEN, ucx_tls="tcp")
    for v, cls in ((-1, OverflowError), (0, ValueError), (U64 - 1, ValueError), (U64 + 5, OverflowError)):
        expect_raises(cls, lambda: tr.push(v), f"version {v} is out of range: {want}")
    assert tr.resume_version == 1, tr.resume_version  # no push was started
    tr.close()


CLOSED = "the engine was closed while it waited (close() from another thread or a signal handler)"


def test_close_wakes_wait():
    """close() from another thread while a receiver's wait or a trainer's wait blocks: the wait
    raises refit.Error saying the engine was closed (it got 'no engine (rf_open got no output
    pointer)', or waited out its whole timeout), the engine is closed once close() returns, and
    later calls say it is closed"""
    plan = refit.Plan("qwen3_tiny_tp2")
    tr = refit.Trainer(plan, 0, token=TOKEN, ucx_tls="tcp", timeout_ms=600000)
    rxs = []
    for r in tr.receivers:
        rx = refit.Receiver(plan, r, token=TOKEN, ucx_tls="tcp")
        rx.bind(plan.engine_tensors(r))
        rxs.append((r, rx, rx.listen("127.0.0.1")))
    held = {n: i.empty() for n, i in tr.sources.items()}
    for n, i in tr.sources.items():
        tr.bind(n, held[n], row0=i.row0)
    for r, _, port in rxs:
        tr.connect(r, "127.0.0.1", port)

    def blocked(wait, started):
        out = []

        def run():
            started.set()
            try:
                out.append(wait())
            except Exception as e:  # noqa: BLE001 (the test looks at what it is)
                out.append(e)
        th = threading.Thread(target=run)
        th.start()
        return th, out

    # a receiver waiting for a version nobody pushes (no timeout)
    r0, rx0 = rxs[0][0], rxs[0][1]
    rx0.arm(1)
    started = threading.Event()
    th, out = blocked(lambda: rx0.wait(1), started)
    started.wait()
    time.sleep(0.2)  # into the wait (if not yet, the wait is refused as closed: same error class)
    rx0.close()
    th.join(60)
    assert not th.is_alive(), "the receiver's wait still blocks after close()"
    assert isinstance(out[0], refit.Error) and out[0].status_name == "RF_ERR_STATE", out
    assert str(out[0]) in (f"wait for version 1: {CLOSED}", "the engine is closed"), str(out[0])
    expect_raises(refit.Error, lambda: rx0.poll(), "the engine is closed", "RF_ERR_STATE")
    # a trainer waiting for receivers that never arm (a push of version 1 under way)
    tr.push(1)
    started = threading.Event()
    th, out = blocked(lambda: tr.wait(), started)
    started.wait()
    time.sleep(0.2)
    tr.close()
    th.join(60)
    assert not th.is_alive(), "the trainer's wait still blocks after close()"
    assert isinstance(out[0], refit.Error) and out[0].status_name == "RF_ERR_STATE", out
    assert str(out[0]) in (f"wait for the push: {CLOSED}", "the engine is closed"), str(out[0])
    expect_raises(refit.Error, lambda: tr.push(2), "the engine is closed", "RF_ERR_STATE")
    for _, rx, _ in rxs[1:]:
        rx.close()


def test_numpy_missing_error():
    """without numpy (or ml_dtypes), Plan.engine_tensors raises an ImportError that names the
    missing module, what needs it and how to install it (it was a bare ModuleNotFoundError)"""
    plan = refit.Plan("qwen3_tiny_tp2")
    for missing in ("numpy", "ml_dtypes"):
        saved = sys.modules[missing]
        sys.modules[missing] = None  # import fails as if it were not installed
        try:
            e = expect_raises(ImportError, lambda: plan.engine_tensors(0), None)
        finally:
            sys.modules[missing] = saved
        assert e.name == missing and str(e).startswith(
            f"refit: host tensors (Plan.engine_tensors, TensorInfo.empty without device=) are numpy arrays, bfloat16 "
            f"and float8_e4m3fn ones from ml_dtypes, and {missing} cannot be imported (") and str(e).endswith(
            "): pip install numpy ml_dtypes (or pip install '.[numpy]' from refit's source tree), or pass device= for "
            "torch tensors"), (e.name, str(e))
    names = sorted(n for i in plan.destinations(0).values() for n in (i.name,) + i.aliases)
    assert sorted(plan.engine_tensors(0)) == names


def test_close_from_signal_handler():
    """close() from a signal handler, which Python runs on the main thread between the slices of
    the wait it interrupts: no deadlock (close cannot wait for its own caller); the wait raises
    'closed' and the engine is closed right after"""
    plan = refit.Plan("qwen3_tiny_tp2")
    rx = refit.Receiver(plan, 0, token=TOKEN, ucx_tls="tcp")
    rx.bind(plan.engine_tensors(0))
    rx.listen("127.0.0.1")
    rx.arm(1)
    signal.signal(signal.SIGUSR1, lambda *_: rx.close())
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    expect_raises(refit.Error, lambda: rx.wait(1, timeout=120),
                  f"wait for version 1: {CLOSED}", "RF_ERR_STATE")
    expect_raises(refit.Error, lambda: rx.poll(), "the engine is closed", "RF_ERR_STATE")
    rx.close()  # again: nothing to do


def test_trainer_wait_timeout():
    """a trainer's wait runs in slices (so that close() can end it) and still gives the push up at
    its own timeout, named in the caller's milliseconds (the receivers never arm)"""
    plan = refit.Plan("qwen3_tiny_tp2")
    tr = refit.Trainer(plan, 0, token=TOKEN, ucx_tls="tcp", timeout_ms=600000)
    rxs = []
    for r in tr.receivers:
        rx = refit.Receiver(plan, r, token=TOKEN, ucx_tls="tcp")
        rx.bind(plan.engine_tensors(r))
        rxs.append((r, rx, rx.listen("127.0.0.1")))
    held = {n: i.empty() for n, i in tr.sources.items()}
    for n, i in tr.sources.items():
        tr.bind(n, held[n], row0=i.row0)
    for r, _, port in rxs:
        tr.connect(r, "127.0.0.1", port)
    tr.push(1)
    e = expect_raises(refit.TimeoutError, lambda: tr.wait(timeout=0.35), None, "RF_ERR_TIMEOUT")
    assert str(e) == "version 1: push not finished after 350 ms: abandoned, endpoints with writes in flight closed", e
    for r, rx, port in rxs:
        t = tr.target(r)  # its reason names the last slice's milliseconds (rf_wait's own)
        assert t[:3] == ("failed", 0, f"127.0.0.1:{port}") and "abandoned, endpoints with writes in flight" in t[3], t
        rx.close()
    tr.close()


def test_finalize_hook():
    """Receiver.set_finalize (refit.h rf_set_finalize) on plan qwen3_tiny_finalize, receivers and
    trainers in this process: listen refuses the plan's engine steps without a hook; the hook gets
    (version, [(step, tensor)]) once per version after the kernel steps ran (the packed UE8M0 scales
    equal a numpy packing of the fp32 scales refit wrote) and before any trainer's wait returns; a
    call into the receiver from inside the hook raises; an exception tears the version on its
    receiver with its type and text (its wait and the trainers' raise TornError naming the step);
    the next version completes; a delta version that changes layer 1 only hands the hook layer 1's
    step alone (and packs layer 1's scales anew); the counters"""
    plan = refit.Plan("qwen3_tiny_finalize")
    opts = dict(token=TOKEN, ucx_tls="tcp", timeout_ms=30000)
    rxs, tensors, calls, inner = [], [], {0: [], 1: []}, []
    returned = {0: 0, 1: 0}
    for r in range(2):
        rx = refit.Receiver(plan, r, **opts)
        t = plan.engine_tensors(r)
        assert rx.bind(t) == [], rx.unbound
        e = expect_raises(refit.Error, lambda: rx.listen("127.0.0.1"), None, "RF_ERR_UNBOUND")
        assert (f"finalize step 'test_post_load' of 'model.layers.0.mlp.down_proj.weight' (and 1 more engine steps of "
                f"receiver {r}) runs the engine's own post-load code: set a hook with rf_set_finalize") in str(e), e
        assert rx.finalize_steps() == [
            ("ue8m0_pack", "model.layers.0.self_attn.qkv_proj.weight_scale_inv", "kernel"),
            ("test_post_load", "model.layers.0.mlp.down_proj.weight", "engine"),
            ("ue8m0_pack", "model.layers.1.self_attn.qkv_proj.weight_scale_inv", "kernel"),
            ("test_post_load", "model.layers.1.mlp.down_proj.weight", "engine")], rx.finalize_steps()

        def hook(version, steps, r=r, rx=rx, t=t):
            packed = t["model.layers.1.self_attn.qkv_proj.weight_scale_inv#ue8m0"]
            calls[r].append((version, steps, packed.copy()))
            try:
                rx.counters()
            except refit.Error as err:
                inner.append(str(err))
            time.sleep(0.1)  # the engine's code takes a while: no trainer's wait may return meanwhile
            returned[r] = version
            if r == 0 and version == 2:
                raise RuntimeError("repack failed at 2")

        rx.set_finalize(hook)
        port = rx.listen("127.0.0.1")
        rxs.append((rx, port))
        tensors.append(t)
    trs, rng, held = [], np.random.default_rng(24), []
    for rank in range(2):
        tr = refit.Trainer(plan, rank, progress_thread=True, delta=True, **opts)
        held.append({})
        for n, i in tr.sources.items():
            x = held[rank][n] = i.empty()
            x[...] = rng.standard_normal(x.shape).astype(x.dtype)
            tr.bind(n, x, row0=i.row0)
        for r, (rx, port) in enumerate(rxs):
            tr.connect(r, "127.0.0.1", port)
        trs.append(tr)

    def version(v, layer=None):
        """push v with new values in every source (layer: only that layer's, 4 times as large, so that
        its block scales change too)"""
        for h in held if v > 1 else ():
            for n, x in h.items():
                if layer is None or f".layers.{layer}." in n:
                    x[...] = (rng.standard_normal(x.shape) * (1 if layer is None else 4)).astype(x.dtype)
        for rx, _ in rxs:
            rx.arm(v)
        for tr in trs:
            tr.push(v)
        errs = []
        for tr in trs:
            try:
                tr.wait(timeout=60)
                errs.append(None)
            except refit.TornError as err:
                errs.append(str(err))
            assert returned == {0: v, 1: v}, (v, returned)  # both hooks returned before the trainers learned
        return errs

    def ue8m0_reference(t):
        """numpy: fp32 block scales [rb, kb] (powers of two) -> int32 [rows, ceil(kb/4)], strides (1, rows)"""
        sc = np.ascontiguousarray(t["model.layers.1.self_attn.qkv_proj.weight_scale_inv"], dtype=np.float32)
        code = ((sc.view(np.uint32) >> 23) & 0xFF).astype(np.uint32)
        rb, kb = code.shape
        kw = (kb + 3) // 4
        code = np.pad(code, ((0, 0), (0, kw * 4 - kb)))
        words = sum(code[:, j::4] << (8 * j) for j in range(4)).astype(np.uint32)  # [rb, kw]
        return np.repeat(words, 128, axis=0).view(np.int32)  # every row of a 128-row block

    steps = [("test_post_load", "model.layers.0.mlp.down_proj.weight"),
             ("test_post_load", "model.layers.1.mlp.down_proj.weight")]
    assert version(1) == [None, None]
    for r, (rx, _) in enumerate(rxs):
        assert rx.wait(1).complete == 1
        assert [c[:2] for c in calls[r]] == [(1, steps)], calls[r]
        want = ue8m0_reference(tensors[r])
        assert want.any() and np.array_equal(calls[r][0][2], want), "the kernel step's output when the hook ran"
        c = rx.counters()
        assert c["finalize_steps"] == 4 and c["finalize_skipped"] == 0, c
        assert c["finalize_ns"] >= c["last_finalize_ns"] > 0, c
    assert inner == ["a call into the receiver from inside its finalize hook"] * 2, inner
    torn = ("version 2 torn: finalize step 'test_post_load' of 'model.layers.0.mlp.down_proj.weight' failed: "
            "RuntimeError: repack failed at 2")
    errs = version(2)
    assert all(e is not None and torn in e for e in errs), errs
    e = expect_raises(refit.TornError, lambda: rxs[0][0].wait(2), None, "RF_ERR_TORN")
    assert torn in str(e) and e.version == 2, e
    assert rxs[1][0].wait(2).complete == 2
    assert version(3) == [None, None]
    for r, (rx, _) in enumerate(rxs):
        assert rx.wait(3).complete == 3 and [c[0] for c in calls[r]] == [1, 2, 3], calls[r]
        assert rx.counters()["versions"] == (2 if r == 0 else 3), rx.counters()
        assert calls[r][-1][1] == steps, calls[r][-1]  # receiver 0 after its torn version: every step
    before = [rx.counters() for rx, _ in rxs]
    packed = [t["model.layers.1.self_attn.qkv_proj.weight_scale_inv#ue8m0"].copy() for t in tensors]
    assert version(4, layer=1) == [None, None]
    for r, (rx, _) in enumerate(rxs):
        assert rx.wait(4).complete == 4 and calls[r][-1][:2] == (4, steps[1:]), calls[r][-1][:2]
        c = rx.counters()
        assert c["deltas"] - before[r]["deltas"] == 2, (c, before[r])
        assert (c["finalize_steps"] - before[r]["finalize_steps"], c["finalize_skipped"] - before[r]["finalize_skipped"]) \
            == (2, 2), (c, before[r])
        want = ue8m0_reference(tensors[r])
        assert not np.array_equal(want, packed[r]) and np.array_equal(calls[r][-1][2], want), "layer 1's packed scales"
    for tr in trs:
        tr.close()
    for rx, _ in rxs:
        rx.close()


# ------------------------------------------------------------------------------------------------
# loopback: receivers and trainers in forked processes, the parent drives versions through pipes

def receiver_proc(plan_name, index, versions, use_blob, conn, dump=None, sparse=False):
    """one receiver: fresh tensors laid out as the engine holds them (Plan.engine_tensors), or with
    dump the stand-ins of a vLLM worker bound through refit.vllm (tests/vllm/standins.py)"""
    try:
        plan = refit.Plan(plan_name)
        opts = dict(token=TOKEN, ucx_tls="tcp", timeout_ms=15000)
        finals = []
        if dump:
            tensors, settings = standins.load(dump, plan._p.receiver(index)[1])
            if settings.pop("engine") == "sglang":  # the model's post_load_weights: the finalize of every version
                binding = refit.sglang.Binding(plan, refit.sglang.EngineView(tensors=tensors, device="cpu", **settings),
                                               host="127.0.0.1", post_load_weights=lambda is_nextn, weight_names:
                                               finals.append((is_nextn, weight_names)), **opts)
            else:
                binding = refit.vllm.Binding(plan, refit.vllm.EngineView(tensors=tensors, device="cpu", **settings),
                                             host="127.0.0.1", **opts)
            rx, port = binding.rx, binding.port
            assert binding.index == index, (binding.index, index)
            poison(tensors)
        else:
            rx = refit.Receiver(plan, index, **opts)
            tensors = plan.engine_tensors(index)
            poison(tensors)
            assert rx.bind(tensors) == [], rx.unbound
            port = rx.listen("127.0.0.1")
        conn.send(("port", index, port, rx.export() if use_blob else None))
        for v in range(1, versions + 1):
            if dump:  # the plug-in's update: arm, then wait
                conn.send(("ready", index, v))
                st = binding.update(v, timeout=60)
                mla = refit.sglang.mla_steps(plan, index) if isinstance(binding, refit.sglang.Binding) else []
                assert finals == [(False, mla)] * (v if mla else 0), (finals, v)
            else:
                rx.arm(v)  # the engine stopped reading: trainers may write v
                conn.send(("ready", index, v))
                st = rx.wait(v, timeout=60)
            ref = reference(plan, index, v, sparse=sparse)
            kept = getattr(binding, "kept", {}) if dump else {}
            got = dict(tensors)
            for n, buf in kept.items():  # SM100: the fp32 scales refit wrote, in the buffers the binding keeps
                got.update((a, buf) for a in (n,) + plan.destination(n, index).aliases)
            bad, compared, written, first = compare(ref, got)
            for n in kept:  # ... and the engine's int32 scales (its whole storage) the pack of them
                w = ref[n.replace("weight_scale_inv", "weight")].shape
                d = int((bits(np_root(tensors[n].a)) != bits(engine_ref.ue8m0_pack(ref[n], w[-2], w[-1]))).sum())
                if d and first is None:
                    first = f"'{n}' (int32 UE8M0) differs in {d} bytes from the pack of the fp32 scales"
                bad += d
            c = rx.counters()
            if (c["challenged"] > 0) != bool(use_blob):  # blob-mode HELLOs are answered statelessly, counted
                raise AssertionError(f"receiver {index}: challenged = {c['challenged']} with use_blob = {use_blob}")
            conn.send(("result", index, v, st.complete, bad, written, first, c["versions"], c["bytes"], c["deltas"]))
        rx.close()
    except Exception:
        conn.send(("fatal", index, traceback.format_exc()))


def trainer_proc(plan_name, rank, addrs, versions, mode, conn):
    try:
        plan = refit.Plan(plan_name)
        tr = refit.Trainer(plan, rank, token=TOKEN, ucx_tls="tcp", timeout_ms=15000, direct=mode == "direct",
                           delta=mode == "delta")
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
            sd = state_dict(plan, v, sparse=mode == "delta")
            for n, i in srcs.items():
                held[n][...] = sd[n] if mode == "module" else sd[n][i.row0:i.row0 + i.rows]
            tr.push(v)
            assert tr.wait() == [], "no receiver is down"
            assert tr.resume_version == v + 1 and tr.target(tr.receivers[0])[:2] == ("complete", v), tr.target(tr.receivers[0])
            c = tr.counters()
            conn.send(("pushed", rank, v, c["bytes"], c["deltas"], c["patch_bytes"]))
        conn.recv()
        tr.close()
    except Exception:
        conn.send(("fatal", rank, traceback.format_exc()))


def loopback(plan_name, versions=2, mode="shard", dumps=False):
    plan = refit.Plan(plan_name)
    ctx = mp.get_context("fork")
    rconns, tconns, procs, done = [], [], [], False

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
            dump = standins.dump_of(plan_name, f"{ROOT}/tests/{plan_name.split('_')[0]}/dumps") if dumps else None
            assert dump or not dumps, f"{plan_name}: no dump in tests/{plan_name.split('_')[0]}/dumps"
            procs.append(ctx.Process(target=receiver_proc,
                                     args=(plan_name, r, versions, mode == "blob", b, dump, mode == "delta")))
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
        sent1 = 0
        for v in range(1, versions + 1):
            for c in rconns:
                assert recv(c, "receiver")[0:3:2] == ("ready", v)
            for c in tconns:
                c.send(("push", v))
            pushed = [recv(c, "trainer") for c in tconns]
            sent = sum(m[3] for m in pushed)
            if mode == "delta":  # version 1 dense; later ones as patches, far fewer bytes than dense
                deltas = sum(m[4] for m in pushed)
                assert (deltas == 0) == (v == 1), (v, deltas)
                assert sent == plan.total_bytes if v == 1 else sent - sent1 < plan.total_bytes / 4, (v, sent, sent1)
                print(f"     {plan_name} v{v}: {sent - sent1} bytes put of {plan.total_bytes} dense, {deltas} patched")
                sent1 = sent
            else:
                assert sent == v * plan.total_bytes, (sent, v * plan.total_bytes)
            for c in rconns:
                _, r, vv, complete, bad, written, first, nver, nbytes, rdeltas = recv(c, "receiver")
                assert complete >= v and bad == 0, f"{plan_name} v{v}: {bad} bytes differ; receiver {r}: {first}"
                assert written == plan._p.receiver(r)[2], (r, written, plan._p.receiver(r)[2])
                if mode == "delta":
                    assert nver == v and (rdeltas > 0) == (v > 1), (r, v, nver, rdeltas)
                else:
                    assert nver == v and nbytes == v * plan._p.receiver(r)[2], (r, nver, nbytes)
        for c in tconns:
            c.send(("quit",))
        done = True
    finally:
        for pr in procs:  # after a failure at once: the others wait for versions that never come
            pr.join(20 if done else 0)
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


def test_loopback_per_expert_mtp():
    loopback("dsv3_tiny_mtp", mode="module")


def test_loopback_dsv3_fp32_no_mtp():
    """DeepSeek-V3 as FSDP2 over transformers 5 holds it: fp32 masters, fused experts, no MTP layer
    (the drafter's layer is left alone, its embed_tokens and heads are the target's)"""
    loopback("dsv3_tiny_fp8_tp2")


def test_loopback_delta_bf16():
    """delta pushes: version 1 dense, then 1% of the values change per version and go as patches;
    every receiver's bytes equal the independent reference of each version"""
    loopback("qwen3_tiny_tp2", versions=3, mode="delta")


def test_loopback_delta_fp8_masters():
    """delta pushes from fp32 masters into block FP8, fused experts, the MLA refresh after apply"""
    loopback("dsv3_tiny_fp8_tp2", versions=3, mode="delta")


def test_vllm_loopback_dsv3_fp8():
    """into stand-ins of vLLM's DeepSeek-V3 at TP2 (FP8, MLA storage rebuilt into W_UK_T/W_UV, mla_attn
    aliases, the MTP drafter), bound through refit.vllm"""
    loopback("vllm_dsv3_fp8_tp2", dumps=True)


def test_vllm_loopback_glm5_bf16():
    """GLM-5 bf16 at TP2: W_UK_T/W_UV views of kv_b_proj itself, the DSA indexer, the drafter"""
    loopback("vllm_glm5_bf16_tp2", dumps=True, mode="blob")


def test_vllm_loopback_qwen3_padded_vocab():
    """Qwen3 with 1000 vocabulary rows at TP2: rank 1's 24 padding rows are never written"""
    loopback("vllm_qwen3_v1000_bf16_tp2", dumps=True)


def test_vllm_loopback_qwen3moe():
    loopback("vllm_qwen3moe_bf16_tp2", dumps=True, mode="direct")


def test_ue8m0_pack_numpy():
    """engine_ref's pack against SM100.md's worked example: 832 rows (N % 128 = 64: the last block's 64
    rows repeat its scales), 5 K blocks -> 2 packed columns, the second with one code"""
    s = np.array([[2.0 ** (i - 3 * j) for j in range(5)] for i in range(7)], np.float32)
    p = engine_ref.ue8m0_pack(s, 832, 5 * 128)
    assert p.shape == (1, 2, 832), p.shape
    for r in (0, 127, 128, 767, 768, 831):
        b = r // 128
        want0 = sum((127 + b - 3 * j) << (8 * j) for j in range(4))
        assert int(p[0, 0, r]) == want0 - (1 << 32 if want0 >= 1 << 31 else 0), (r, hex(int(p[0, 0, r])))
        assert int(p[0, 1, r]) == 127 + b - 12, (r, int(p[0, 1, r]))


def sm100_view(dump, **changes):
    """EngineView of rank 0 of a dump (file name in tests/vllm/dumps), with changes"""
    tensors, settings = standins.load(f"{DUMPS}/{dump}.txt", 0)
    assert settings.pop("engine") == "vllm"
    settings.update(changes)
    return refit.vllm.EngineView(tensors=tensors, device="cpu", **settings)


def test_vllm_sm100_refusals():
    """an SM100 plan (ue8m0_pack steps) refuses an SM90 engine and the reverse, by name; the MoE kernel
    the plan assumes (TritonExperts, or TritonOrDeepGemmExperts with deep_gemm); fp32 scales where the
    plan expects DeepGEMM's packed int32 ones"""
    R = refit.vllm.Refused

    def refused(setting, message, plan, view):
        e = expect_raises(R, lambda: refit.vllm.Binding(plan, view, token=TOKEN, ucx_tls="tcp"), f"vLLM {setting}: {message}")
        assert e.setting == setting, e

    refused("device capability", "SM90 (cpu); plan 'vllm_qwen3_fp8_tp1_sm100' is an SM100 plan (B200/GB200/B300: its "
            "ue8m0_pack finalize steps pack the FP8 scales into DeepGEMM's UE8M0 int32 weight_scale_inv), which vLLM "
            "on this GPU does not hold (use a plan with engine.sm = 90 on SM90)", "vllm_qwen3_fp8_tp1_sm100",
            sm100_view("qwen3_fp8_tp1_sm90", deep_gemm_e8m0=True))
    refused("device capability", "SM100 (cpu); plan 'vllm_qwen3_fp8_tp1' follows the vllm profile for SM90 (H100/H200): "
            "elsewhere vLLM picks other kernels and layouts (on SM100 DeepGEMM packs FP8 scales into UE8M0 int32; use "
            "an SM100 plan, engine.sm = 100)", "vllm_qwen3_fp8_tp1", sm100_view("qwen3_fp8_tp1_sm100"))
    refused("moe_backend", "'model.layers.0.mlp.experts.routed_experts' runs TritonOrDeepGemmExperts, which may repack "
            "or reorder the expert weights after loading; the tables of plan 'vllm_qwen3moe_fp8_tp1_sm100' hold them as "
            "TritonExperts does (serve with --moe-backend triton)", "vllm_qwen3moe_fp8_tp1_sm100",
            sm100_view("qwen3moe_fp8_tp1_sm100_deepgemm"))
    refused("moe_backend", "'model.layers.0.mlp.experts.routed_experts' runs TritonExperts, which may repack or reorder "
            "the expert weights after loading; the tables of plan 'vllm_qwen3moe_fp8_tp1_sm100_deepgemm' hold them as "
            "TritonOrDeepGemmExperts does (serve with --moe-backend deep_gemm)", "vllm_qwen3moe_fp8_tp1_sm100_deepgemm",
            sm100_view("qwen3moe_fp8_tp1_sm100"))
    refused("moe_backend", "'model.layers.0.mlp.experts.routed_experts' runs TrtLlmFp8ExpertsMonolithic, which may "
            "repack or reorder the expert weights after loading; the tables of plan 'vllm_qwen3moe_fp8_tp1_sm100' hold "
            "them as TritonExperts does (serve with --moe-backend triton)", "vllm_qwen3moe_fp8_tp1_sm100",
            sm100_view("qwen3moe_fp8_tp1_sm100_auto"))
    # an SM100 plan with a checkpoint's fp32 scales still needs DeepGEMM's UE8M0 on (it packs them)
    refused("VLLM_USE_DEEP_GEMM_E8M0", "the engine does not use DeepGEMM's UE8M0 scales; plan "
            "'vllm_qwen3_fp8_tp1_sm100_requant' packs DeepGEMM's UE8M0 scales (an SM100 plan) (set "
            "VLLM_USE_DEEP_GEMM_E8M0=1)", "vllm_qwen3_fp8_tp1_sm100_requant",
            sm100_view("qwen3_fp8_tp1_sm100", deep_gemm_e8m0=False))
    # an SM100 GPU whose linears kept fp32 scales (another kernel than DeepGEMM's): named, nothing bound
    Q = "model.layers.0.self_attn.qkv_proj.weight_scale_inv"
    expect_raises(refit.BindError, lambda: refit.vllm.Binding(
        "vllm_qwen3_fp8_tp1_sm100", sm100_view("qwen3_fp8_tp1_sm90", device_capability=(10, 0), deep_gemm_e8m0=True),
        token=TOKEN, ucx_tls="tcp"),
        f"tensor '{Q}' of plan 'vllm_qwen3_fp8_tp1_sm100' (receiver 0): the engine holds float32 [4, 2] strides [2, 1]; "
        "the plan's SM100 tables expect DeepGEMM's packed UE8M0 scales, int32 [512, 1] strides [1, 512] (vLLM on SM100 "
        "with DeepGEMM's linear kernel and VLLM_USE_DEEP_GEMM_E8M0=1)")
    # bound: the engine's int32 tensor as '<name>#ue8m0', a kept fp32 buffer under the name, nothing else
    v = sm100_view("dsv3_fp8_tp1_mtp_sm100")
    b = refit.vllm.Binding("vllm_dsv3_fp8_tp1_sm100", v, token=TOKEN, host="127.0.0.1", ucx_tls="tcp")
    try:
        K = "model.layers.0.self_attn.kv_b_proj.weight_scale_inv"
        assert b.rx.unbound == [] and len(b.kept) == 24 and b.kept[K].dtype == np.float32 and b.kept[K].shape == (8, 4)
        assert b.rx._bound[(3, b.rx.tensors[K + "#ue8m0"].id)][1][0] == v.tensors[K].data_ptr()
        assert b.rx._bound[(2, b.rx.tensors[K].id)][1][0] == b.kept[K].__array_interface__["data"][0]
    finally:
        b.close()


def test_vllm_loopback_sm100_qwen3():
    """SM100 (B200): stand-ins of vLLM's Qwen3 with DeepGEMM's int32 UE8M0 scales; refit writes fp32 scales
    into buffers the binding keeps, the ue8m0_pack finalize steps write the engine's int32 ones"""
    loopback("vllm_qwen3_fp8_tp1_sm100", dumps=True)


def test_vllm_loopback_sm100_qwen3moe():
    """SM100 with --moe-backend triton: the experts as on SM90, the linears' scales packed"""
    loopback("vllm_qwen3moe_fp8_tp1_sm100", dumps=True, mode="direct")


def test_vllm_loopback_sm100_qwen3moe_deepgemm():
    """SM100 with --moe-backend deep_gemm: the experts' w13/w2 scales packed too, one group per expert"""
    loopback("vllm_qwen3moe_fp8_tp1_sm100_deepgemm", dumps=True)


def test_vllm_loopback_sm100_requant():
    """SM100 with a checkpoint's fp32 scales: the trainers cast each DeepGEMM linear (and, with deep_gemm,
    the experts) as vLLM re-quantizes it after loading; every byte against engine_ref's own requant of the
    fp32-scale weights (MLA's W_UK_T / W_UV from the re-quantized kv_b_proj), the packed scales included"""
    loopback("vllm_qwen3_fp8_tp1_sm100_requant", dumps=True)
    loopback("vllm_qwen3moe_fp8_tp1_sm100_deepgemm_requant", dumps=True, mode="delta", versions=3)
    loopback("vllm_dsv3_fp8_tp1_sm100_requant", dumps=True, versions=2)


def test_vllm_loopback_sm100_dsv3():
    """SM100 DeepSeek-V3: MLA (W_UK_T/W_UV from the kept fp32 kv_b_proj scales), aliases of the packed
    scales under mla_attn and _shared_experts, the MTP drafter"""
    loopback("vllm_dsv3_fp8_tp1_sm100", dumps=True, versions=3)


def test_sglang_loopback_qwen3_fp8():
    """into stand-ins of SGLang's Qwen3 (block FP8: qkv_proj, gate_up_proj, weight_scale_inv), bound
    through refit.sglang"""
    loopback("sglang_qwen3_fp8_tp1", dumps=True)


def test_sglang_loopback_qwen3moe_fp8():
    """SGLang's Qwen3-MoE: mlp.experts.w13_weight / w2_weight with their scales, the bf16 router"""
    loopback("sglang_qwen3moe_fp8_tp1", dumps=True, mode="direct")


def test_sglang_loopback_dsv3_fp8():
    """SGLang's DeepSeek-V3: fused_qkv_a_proj_with_mqa, FP8 experts and shared experts; the finalize step
    (post_load_weights: w_kc / w_vc) runs once per complete version"""
    loopback("sglang_dsv3_fp8_tp1", dumps=True)


def test_sglang_loopback_glm5_bf16():
    """SGLang's GLM-5: MLA and the DSA indexer (wq_b, wk, weights_proj, fp32 k_norm) apart"""
    loopback("sglang_glm5_bf16_tp1", dumps=True, mode="blob")


def test_sglang_loopback_tp2_ep2():
    """SGLang's Qwen3-MoE at TP2 with expert parallelism (two whole experts per rank, the vocabulary
    split), and DeepSeek-V3 FP8 at TP2, bound through refit.sglang"""
    loopback("sglang_qwen3moe_bf16_tp2_ep2", dumps=True)
    loopback("sglang_dsv3_fp8_tp2", dumps=True, mode="blob")


TESTS = [
    test_library,
    test_small_facts,
    test_source_lookups,
    test_ranks,
    test_binding_plan,
    test_reference_matches_tables,
    test_bind_refusals,
    test_bind_masters_and_fused_experts,
    test_bind_engine_layouts,
    test_wait_releases_gil,
    test_version_and_token_range,
    test_close_wakes_wait,
    test_trainer_wait_timeout,
    test_finalize_hook,
    test_close_from_signal_handler,
    test_numpy_missing_error,
    test_vllm_bind_every_dump,
    test_vllm_refusals,
    test_ue8m0_pack_numpy,
    test_vllm_sm100_refusals,
    test_vllm_driver,
    test_loopback_bf16_module,
    test_loopback_bf16_direct,
    test_loopback_fp8_kv_replicated,
    test_loopback_fp8_experts_ep,
    test_loopback_glm_mla_blobs,
    test_loopback_glm_hsdp_ue8m0,
    test_loopback_per_expert_mtp,
    test_loopback_dsv3_fp32_no_mtp,
    test_loopback_delta_bf16,
    test_loopback_delta_fp8_masters,
    test_vllm_loopback_dsv3_fp8,
    test_vllm_loopback_glm5_bf16,
    test_vllm_loopback_qwen3_padded_vocab,
    test_vllm_loopback_qwen3moe,
    test_vllm_loopback_sm100_qwen3,
    test_vllm_loopback_sm100_qwen3moe,
    test_vllm_loopback_sm100_qwen3moe_deepgemm,
    test_vllm_loopback_sm100_dsv3,
    test_vllm_loopback_sm100_requant,
    test_sglang_bind_every_dump,
    test_sglang_refusals,
    test_sglang_cpu_platform,
    test_sglang_repacking,
    test_sglang_driver,
    test_sglang_post_load_fails,
    test_sglang_loopback_qwen3_fp8,
    test_sglang_loopback_qwen3moe_fp8,
    test_sglang_loopback_dsv3_fp8,
    test_sglang_loopback_glm5_bf16,
    test_sglang_loopback_tp2_ep2,
]


def run_forked(fn, alarm_s=900):
    """fn in a child process (a crash or hang fails that test alone; the alarm only catches a hang:
    a loaded machine stretches a loopback test to minutes)"""
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
