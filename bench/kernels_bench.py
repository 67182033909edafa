"""kernels_bench.py LIB.so: block-FP8 quantize + pack (kernels/quant.cu through ctypes) against the
device-to-device copy, a PyTorch per-block reference and a plain Triton per-block kernel, in one run
on one GPU. Bandwidth = (bytes read + bytes written) / time, median of several timed runs (CUDA
events) after warm-up. Cases (GLM-5 shapes, MODELS.md):
  experts w13   256 x gate [2048,6144] + 256 x up [2048,6144] bf16 -> w13 [256,4096,6144] fp8 (2 calls)
  experts w2    256 x [6144,2048] bf16 -> [256,6144,2048] fp8 (1 call, 256 items)
  dense         [16384,6144] bf16 -> fp8
  TP8 pack      [6144,16384] bf16 split on dim 1 -> 8 contiguous [6144,2048] fp8 pieces (8 items)
  fp32 source   [16384,6144] fp32 -> fp8
  cast pack     [16384,6144] fp32 -> bf16 (the cast path; peers: torch .to(), copy)
  refresh       MLA absorption of 78 GLM-5 layers at TP8 (8 heads), UE8M0 requant of a w13 in place
  ue8m0 pack    SM100 finalize: DeepSeek-V3 w13 [256,4096,7168] / w2 [256,7168,2048] fp32 block scales
                -> DeepGEMM's packed int32 MN-major layout (checked against DeepGEMM's PyTorch path);
                a whole DeepSeek-V3 EP8 receiver's scales (543 tensors) in one grouped launch, also
                timed against one launch per tensor
  requant cast  the trainer's cast for vLLM on SM100 with fp32 checkpoint scales (RFK_SCALE_REQUANT):
                GLM-5 w13 as above in one pass, checked against the fp32-scale cast + the in-place requant
Every peer output is compared byte for byte with ours (the contract: scale = amax/448, q =
e4m3_rne_satfinite(x * (448/amax))). Ratios: ours / copy, ours / Triton, ours / PyTorch. All
contenders of a case are timed in interleaved rounds, each round starting at a different one
(median of 7). RFK_BENCH_ALT=other.so adds an earlier build of the kernels as a contender ("alt");
--ours-only skips the peers; a second argument "0,2,4" picks cases.
Run: ninja bench_kernels (on a GPU machine), or python3 bench/kernels_bench.py build/obj/libkernels_cuda.so
"""
import ctypes
import sys
import traceback

try:
    import torch
except ImportError:
    print("kernels_bench: skipped: no torch")
    sys.exit(0)
if not torch.cuda.is_available():
    print("kernels_bench: skipped: no CUDA device")
    sys.exit(0)
try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

RFK_BF16, RFK_FP32, RFK_FP8 = 1, 2, 3


class Shape(ctypes.Structure):
    _fields_ = [("src_dtype", ctypes.c_int), ("out_dtype", ctypes.c_int), ("ue8m0", ctypes.c_int),
                ("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("src_ld", ctypes.c_int64),
                ("out_ld", ctypes.c_int64), ("scale_ld", ctypes.c_int64)]


class Item(ctypes.Structure):
    _fields_ = [("src", ctypes.c_void_p), ("out", ctypes.c_void_p), ("scale", ctypes.c_void_p)]


OURS_ONLY = "--ours-only" in sys.argv
sys.argv = [a for a in sys.argv if a != "--ours-only"]
lib = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else "build/obj/libkernels_cuda.so")
lib.rfk_cuda_run.argtypes = [ctypes.POINTER(Shape), ctypes.POINTER(Item), ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_void_p]
flag = torch.zeros(1, dtype=torch.int32, device="cuda")
# RFK_BENCH_ALT=other.so: an earlier build of the kernels, timed in the same rounds ("alt")
import os
alt = None
if os.environ.get("RFK_BENCH_ALT"):
    alt = ctypes.CDLL(os.environ["RFK_BENCH_ALT"])
    alt.rfk_cuda_run.argtypes = lib.rfk_cuda_run.argtypes


_arrays = {}


def rfk_call(shape, items, which=None):
    # the ctypes item array is built once per item list, outside the timed calls (building 256
    # items costs ~0.1 ms, a few percent of an expert layer's kernel time)
    arr = _arrays.get(id(items))
    if arr is None or arr[0] is not items:
        arr = _arrays[id(items)] = (items, (Item * len(items))(*[Item(*it) for it in items]))
    arr = arr[1]
    rc = (which or (alt if use_alt else lib)).rfk_cuda_run(ctypes.byref(shape), arr, len(items), flag.data_ptr(),
                          torch.cuda.current_stream().cuda_stream)
    if rc != 0:
        raise RuntimeError(f"rfk_cuda_run: {rc}")


def bench(fns, reps=7, slow_reps=3):
    """median seconds per call of each function in fns (name -> fn), measured in interleaved
    rounds so that clock or thermal drift hits every contender alike; each sample times `iters`
    back-to-back calls (>= ~3 ms in all). Functions slower than 20 ms get slow_reps samples."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    iters, times, slow = {}, {}, set()
    for name, fn in fns.items():
        fn()
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        b.synchronize()
        t = a.elapsed_time(b) * 1e-3
        iters[name] = max(1, min(50, int(3e-3 / max(t, 1e-6))))
        times[name] = []
        if t > 20e-3:
            slow.add(name)
    names = list(fns)
    for rep in range(reps):
        # each round starts with a different contender: the first place of a round measures
        # lower than the others by up to a few percent
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            fn = fns[name]
            if name in slow and rep >= slow_reps:
                continue
            a.record()
            for _ in range(iters[name]):
                fn()
            b.record()
            b.synchronize()
            times[name].append(a.elapsed_time(b) * 1e-3 / iters[name])
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


# ---- peers ----
def torch_per_block(x, out_q=None):
    """per_block_cast_to_fp8 style, our contract: pad to 128, view blocks, amax, scale, cast."""
    m, n = x.shape
    xp = torch.zeros((-(-m // 128) * 128, -(-n // 128) * 128), dtype=torch.float32, device=x.device)
    xp[:m, :n] = x
    xv = xp.view(-1, 128, xp.size(1) // 128, 128)
    amax = xv.abs().amax(dim=(1, 3), keepdim=True).clamp(min=1e-4)
    c448 = torch.full((), 448.0, dtype=torch.float32, device=x.device)  # tensor / tensor: one IEEE division
    q = (xv * (c448 / amax)).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    q = q.view_as(xp)[:m, :n]
    if out_q is not None:
        out_q.copy_(q)
    return q, (amax / c448).view(xv.size(0), xv.size(2))


if triton is not None:
    @triton.jit
    def _tr_quant(x_ptr, y_ptr, s_ptr, M, N, sxe, sxm, sye, sym, sse, ssm, BLOCK: tl.constexpr):
        """one program per 128x128 block of item pid(2): load, amax, scale, store"""
        pm, pn, e = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
        rm = pm * BLOCK + tl.arange(0, BLOCK)
        rn = pn * BLOCK + tl.arange(0, BLOCK)
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        x = tl.load(x_ptr + e * sxe + rm[:, None] * sxm + rn[None, :], mask=mask, other=0.0).to(tl.float32)
        amax = tl.maximum(tl.max(tl.abs(x)), 1e-4)
        mul = tl.math.div_rn(448.0, amax)
        y = tl.clamp(x * mul, -448.0, 448.0).to(tl.float8e4nv)
        tl.store(y_ptr + e * sye + rm[:, None] * sym + rn[None, :], y, mask=mask)
        tl.store(s_ptr + e * sse + pm * ssm + pn, tl.math.div_rn(amax, 448.0))


def triton_quant(x, sxe, sxm, y, sye, sym, s, sse, ssm, E, M, N):
    grid = (-(-M // 128), -(-N // 128), E)
    _tr_quant[grid](x, y, s, M, N, sxe, sxm, sye, sym, sse, ssm, BLOCK=128, num_warps=8)


def randn(shape, dtype):
    t = torch.empty(shape, dtype=dtype, device="cuda")
    t.normal_()
    return t


rows_out = []


def report(name, bytes_moved, t_ours, t_copy, t_triton, t_torch, eq):
    bw = lambda t: bytes_moved / t / 1e9 if t else float("nan")
    r = lambda a, b: b / a if (a and b) else float("nan")
    rows_out.append((name, bytes_moved / 1e9, bw(t_ours), bw(t_copy), bw(t_triton), bw(t_torch),
                     r(t_ours, t_copy), r(t_ours, t_triton), r(t_ours, t_torch), eq))
    print(f"  {name}: ours {t_ours * 1e3:.3f} ms, copy {t_copy * 1e3:.3f} ms, triton "
          f"{(t_triton or 0) * 1e3:.3f} ms, torch {(t_torch or 0) * 1e3:.3f} ms, {eq}", flush=True)


def copy_fn(nbytes):
    """cudaMemcpy D2D (torch copy_ of contiguous uint8, cudaMemcpyAsync) moving nbytes read + written"""
    half = nbytes // 2
    a = torch.empty(half, dtype=torch.uint8, device="cuda")
    b = torch.empty(half, dtype=torch.uint8, device="cuda")
    a.random_(0, 255)
    return lambda: b.copy_(a)


use_alt = False


def alt_call(fn):
    """runs fn with rfk_call going to the alternative library"""
    global use_alt
    use_alt = True
    try:
        fn()
    finally:
        use_alt = False


def triton_verdict(out, scale, tr):
    """keeps our output, reruns the Triton peer into the same buffers and compares; returns our
    bytes and scales and the verdict list"""
    mine_q, mine_s = out.clone(), scale.clone()
    eq = []
    if triton is not None:
        out.zero_()
        tr()
        eq.append("triton " + ("equal" if torch.equal(out, mine_q) and torch.equal(scale, mine_s) else "DIFFERENT"))
    return mine_q, mine_s, eq


def run_case(name, nbytes, ours, triton_fn, torch_fn, check):
    """check() compares peers' bytes with ours and frees what it made; then all contenders are
    timed in interleaved rounds with a copy of the same bytes"""
    ours()
    torch.cuda.synchronize()
    eq = check()
    fns = {"ours": ours, "copy": copy_fn(nbytes)}
    if alt is not None:
        fns["alt"] = lambda: alt_call(ours)
    if triton_fn is not None and not OURS_ONLY:
        fns["triton"] = triton_fn
    if torch_fn is not None and not OURS_ONLY:
        fns["torch"] = torch_fn
    t = bench(fns)
    report(name, nbytes, t["ours"], t["copy"], t.get("triton"), t.get("torch"), eq)
    if "alt" in t:
        print(f"  {name}: alt build {nbytes / t['alt'] / 1e9:.0f} GB/s ({t['copy'] / t['alt']:.3f} of copy), "
              f"this build {nbytes / t['ours'] / 1e9:.0f} GB/s ({t['copy'] / t['ours']:.3f} of copy)", flush=True)
    del fns
    torch.cuda.empty_cache()


def case_experts(name, E, R, C, halves, mode=0):
    """halves = 2: gate and up into w13 [E, 2R, C]; 1: down [E, R, C]. mode 2 (RFK_SCALE_REQUANT, the
    trainer's cast for vLLM on SM100): checked against our fp32-scale cast followed by our in-place
    requant kernel (two passes), no peers (none does the fused cast)"""
    srcs = [randn((E, R, C), torch.bfloat16) for _ in range(halves)]
    out = torch.empty((E, halves * R, C), dtype=torch.uint8, device="cuda")
    sr, sc = R // 128, -(-C // 128)
    scale = torch.empty((E, halves * sr, sc), dtype=torch.float32, device="cuda")
    shape = Shape(RFK_BF16, RFK_FP8, mode, R, C, C, C, sc)
    calls = []
    for h, s in enumerate(srcs):
        calls.append([(s.data_ptr() + e * R * C * 2, out.data_ptr() + (e * halves * R + h * R) * C,
                       scale.data_ptr() + (e * halves * sr + h * sr) * sc * 4) for e in range(E)])
    def ours():
        for items in calls:
            rfk_call(shape, items)
    def tr():
        for h, s in enumerate(srcs):
            triton_quant(s, R * C, C, out[:, h * R:].view(torch.float8_e4m3fn), halves * R * C, C,
                         scale[:, h * sr:], halves * sr * sc, sc, E, R, C)
    chunk = 32
    tq = torch.empty((chunk * R, C), dtype=torch.float8_e4m3fn, device="cuda")
    def pt():
        for s in srcs:
            for e0 in range(0, E, chunk):
                torch_per_block(s[e0:e0 + chunk].view(-1, C), tq)
    def check():
        if OURS_ONLY:
            return ""
        mine_q, mine_s, eq = triton_verdict(out, scale, tr)
        q, s = torch_per_block(srcs[-1][:chunk].view(-1, C))
        eq.append("torch " + ("equal" if torch.equal(q.view(torch.uint8).view(chunk, R, C), mine_q[:chunk, (halves - 1) * R:])
                              and torch.equal(s.view(chunk, sr, sc), mine_s[:chunk, (halves - 1) * sr:]) else "DIFFERENT"))
        return ", ".join(eq)
    nbytes = halves * E * R * C * 3 + scale.numel() * 4
    if mode == 2:
        run_case(name, nbytes, ours, None, None, lambda: requant_verdict(shape, calls, out, scale, E, halves * R, C))
        return
    run_case(name, nbytes, ours, tr if triton else None, pt, check)


def requant_verdict(shape, calls, out, scale, E, R, C):
    """the fused requant cast against the fp32-scale cast then rfk_cuda_requant_ue8m0 in place"""
    fused_q, fused_s = out.clone(), scale.clone()
    two = Shape(shape.src_dtype, shape.out_dtype, 0, shape.rows, shape.cols, shape.src_ld, shape.out_ld, shape.scale_ld)
    for items in calls:
        rfk_call(two, items)
    items = (Requant * E)(*[Requant(out[e].data_ptr(), scale[e].data_ptr(), out[e].data_ptr(), scale[e].data_ptr())
                            for e in range(E)])
    lib.rfk_cuda_requant_ue8m0.argtypes = [ctypes.POINTER(Requant), ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                           ctypes.c_void_p, ctypes.c_void_p]
    rc = lib.rfk_cuda_requant_ue8m0(items, E, R, C, flag.data_ptr(), torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    same = rc == 0 and torch.equal(fused_q, out) and torch.equal(fused_s, scale)
    return "two-pass cast + requant " + ("equal" if same else "DIFFERENT")


def case_dense(name, R, C, src_dtype, pieces=1):
    """[R, C] source split on dim 1 into `pieces` contiguous [R, C/pieces] outputs"""
    x = randn((R, C), torch.float32 if src_dtype == RFK_FP32 else torch.bfloat16)
    es = x.element_size()
    w = C // pieces
    sc = -(-w // 128)
    sr = -(-R // 128)
    out = torch.empty((pieces, R, w), dtype=torch.uint8, device="cuda")
    scale = torch.empty((pieces, sr, sc), dtype=torch.float32, device="cuda")
    shape = Shape(src_dtype, RFK_FP8, 0, R, w, C, w, sc)
    items = [(x.data_ptr() + p * w * es, out.data_ptr() + p * R * w, scale.data_ptr() + p * sr * sc * 4)
             for p in range(pieces)]
    ours = lambda: rfk_call(shape, items)
    tr = lambda: triton_quant(x, w, C, out.view(torch.float8_e4m3fn), R * w, w, scale, sr * sc, sc, pieces, R, w)
    tq = torch.empty((R, w), dtype=torch.float8_e4m3fn, device="cuda")
    def pt():
        for p in range(pieces):
            torch_per_block(x[:, p * w:(p + 1) * w], tq)
    def check():
        if OURS_ONLY:
            return ""
        mine_q, mine_s, eq = triton_verdict(out, scale, tr)
        q, s = torch_per_block(x[:, :w])
        eq.append("torch " + ("equal" if torch.equal(q.view(torch.uint8), mine_q[0]) and
                              torch.equal(s, mine_s[0]) else "DIFFERENT"))
        return ", ".join(eq)
    nbytes = R * C * (es + 1) + scale.numel() * 4
    run_case(name, nbytes, ours, tr if triton else None, pt, check)


def case_cast(name, R, C):
    """fp32 -> bf16 cast; the peer is torch's own cast (out.copy_(x))"""
    x = randn((R, C), torch.float32)
    out = torch.empty((R, C), dtype=torch.bfloat16, device="cuda")
    shape = Shape(RFK_FP32, RFK_BF16, 0, R, C, C, C, 0)
    items = [(x.data_ptr(), out.data_ptr(), None)]
    ref = x.to(torch.bfloat16)
    def check():
        return "torch " + ("equal" if torch.equal(out.view(torch.int16), ref.view(torch.int16)) else "DIFFERENT")
    run_case(name, R * C * 6, lambda: rfk_call(shape, items), None, lambda: out.copy_(x), check)


class Absorb(ctypes.Structure):
    _fields_ = [("kv_b", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("out", ctypes.c_void_p)]


class MlaLayout(ctypes.Structure):
    _fields_ = [("heads", ctypes.c_int), ("nope", ctypes.c_int), ("v", ctypes.c_int), ("lora", ctypes.c_int),
                ("elems", ctypes.c_int64), ("uk_off", ctypes.c_int64), ("uk_stride", ctypes.c_int64 * 3),
                ("uv_off", ctypes.c_int64), ("uv_stride", ctypes.c_int64 * 3)]


class Requant(ctypes.Structure):
    _fields_ = [("q", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("q_out", ctypes.c_void_p),
                ("scale_out", ctypes.c_void_p)]


def case_absorb(name, layers, heads, nope, v, lora):
    """MLA absorption for one receiver: every layer's fp8 kv_b_proj [heads*(nope+v), lora] into
    the bf16 storage W^T [lora, heads*(nope+v)] that vLLM's W_UK_T / W_UV view, one call"""
    rows, per = heads * (nope + v), nope + v
    sr, sc = -(-rows // 128), -(-lora // 128)
    kv = torch.randint(0, 126, (layers, rows, lora), dtype=torch.uint8, device="cuda")
    sca = torch.rand((layers, sr, sc), dtype=torch.float32, device="cuda") * 1e-3
    st = torch.empty((layers, lora, rows), dtype=torch.bfloat16, device="cuda")
    items = (Absorb * layers)(*[Absorb(kv[l].data_ptr(), sca[l].data_ptr(), st[l].data_ptr()) for l in range(layers)])
    lay = MlaLayout(heads, nope, v, lora, lora * rows, 0, (ctypes.c_int64 * 3)(per, 1, rows),
                    nope, (ctypes.c_int64 * 3)(per, rows, 1))
    lib.rfk_cuda_mla_absorb.argtypes = [ctypes.POINTER(Absorb), ctypes.c_int, ctypes.c_int, ctypes.POINTER(MlaLayout),
                                        ctypes.c_void_p]
    def ours():
        rc = lib.rfk_cuda_mla_absorb(items, layers, 1, ctypes.byref(lay), torch.cuda.current_stream().cuda_stream)
        if rc != 0:
            raise RuntimeError(f"rfk_cuda_mla_absorb: {rc}")
    def check():  # vLLM's formula in PyTorch: dequantize in fp32, round to bf16, transpose, view, split
        w = (kv[0].view(torch.float8_e4m3fn).float().view(sr, 128, sc, 128)[:, :, :, :] *
             sca[0][:, None, :, None]).view(rows, lora).to(torch.bfloat16)
        wt = st[0].view(lora, heads, per)
        uk, uv = wt[:, :, :nope].permute(1, 2, 0), wt[:, :, nope:].transpose(0, 1)
        ref = w.T.contiguous().view(lora, heads, per)
        ok = torch.equal(st[0].view(torch.int16), w.T.contiguous().view(torch.int16)) and \
            torch.equal(uk.contiguous().view(torch.int16), ref[:, :, :nope].permute(1, 2, 0).contiguous().view(torch.int16)) and \
            torch.equal(uv.contiguous().view(torch.int16), ref[:, :, nope:].transpose(0, 1).contiguous().view(torch.int16))
        return "torch " + ("equal" if ok else "DIFFERENT")
    run_case(name, kv.numel() + 2 * st.numel(), ours, None, None, check)


def case_requant(name, E, R, C):
    """UE8M0 re-quantization in place of E experts' fp8 [R, C] with fp32 block scales"""
    q = torch.randint(0, 126, (E, R, C), dtype=torch.uint8, device="cuda")
    sc = torch.rand((E, R // 128, C // 128), dtype=torch.float32, device="cuda") * 1e-3 + 1e-5
    items = (Requant * E)(*[Requant(q[e].data_ptr(), sc[e].data_ptr(), q[e].data_ptr(), sc[e].data_ptr())
                            for e in range(E)])
    lib.rfk_cuda_requant_ue8m0.argtypes = [ctypes.POINTER(Requant), ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                           ctypes.c_void_p, ctypes.c_void_p]
    def ours():
        rc = lib.rfk_cuda_requant_ue8m0(items, E, R, C, flag.data_ptr(), torch.cuda.current_stream().cuda_stream)
        if rc != 0:
            raise RuntimeError(f"rfk_cuda_requant_ue8m0: {rc}")
    run_case(name, 2 * q.numel() + 2 * sc.numel() * 4, ours, None, None, lambda: "")


def torch_ue8m0_pack(sf, mn):
    """DeepGEMM's SM100 transform in PyTorch (tests/vllm/ue8m0_vectors.py dg_transform_sf): rows
    broadcast from their 128-row block, exponent bytes, padded, 4 per int32, MN-major"""
    b = sf.index_select(-2, torch.arange(mn, device=sf.device) // 128)
    codes = (b.contiguous().view(torch.int32) >> 23).to(torch.uint8)
    g, rows, ks = codes.shape
    amn, ak = -(-rows // 4) * 4, -(-ks // 4) * 4
    padded = torch.zeros(g, amn, ak, dtype=torch.uint8, device=sf.device)
    padded[:, :rows, :ks] = codes
    padded = padded.view(-1).view(torch.int32).view(g, amn, ak // 4)
    out = torch.empty_strided((g, amn, ak // 4), (amn * (ak // 4), 1, amn), dtype=torch.int32, device=sf.device)
    return out.copy_(padded)


def case_pack(name, E, N, K):
    """UE8M0 pack of E experts' power-of-two fp32 block scales of [N, K] weights"""
    sr, sk = -(-N // 128), -(-K // 128)
    sf = torch.pow(2.0, torch.randint(-30, 0, (E, sr, sk), device="cuda").float())
    words = E * ((sk + 3) // 4) * (-(-N // 4) * 4)
    out = torch.empty(words, dtype=torch.int32, device="cuda")
    lib.rfk_cuda_ue8m0_pack.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    def ours():
        rc = lib.rfk_cuda_ue8m0_pack(sf.data_ptr(), out.data_ptr(), E, N, K, flag.data_ptr(),
                                     torch.cuda.current_stream().cuda_stream)
        if rc != 0:
            raise RuntimeError(f"rfk_cuda_ue8m0_pack: {rc}")
    def check():
        ref = torch_ue8m0_pack(sf, N)
        ok = torch.equal(out, ref.as_strided((words,), (1,)))
        del ref
        return "DeepGEMM torch path " + ("equal" if ok else "DIFFERENT")
    run_case(name, sf.numel() * 4 + words * 4, ours, None, None, check)


class PackItem(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_void_p), ("out", ctypes.c_void_p), ("groups", ctypes.c_int64),
                ("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("first", ctypes.c_int64),
                ("bx", ctypes.c_int32), ("align", ctypes.c_int32)]


def pack_prepare(items):
    """rfk_ue8m0_pack_prepare (kernels/ref.c, not in this .so) in Python: each item's first block and
    chunks of 4096 rows, the alignment bits; returns the launch's blocks"""
    total = 0
    for it in items:
        sk = -(-it.cols // 128)
        mn = -(-it.rows // 4) * 4
        it.bx = -(-mn // 4096)
        it.first = total
        it.align = int(it.out % 16 == 0) | (int(sk % 4 == 0 and it.scale % 16 == 0) << 1)
        total += it.groups * ((sk + 3) // 4) * it.bx
    return total


def case_pack_set(name, ep=8, experts=256, moe_layers=58, layers=61, dense_layers=3):
    """the grouped UE8M0 pack: every fp8 weight's block scales of a DeepSeek-V3 receiver at EP (local
    experts 256/ep, attention and shared experts whole) in ONE rfk_cuda_ue8m0_pack_items launch:
    per MoE layer w13 [E, 4096, 7168], w2 [E, 7168, 2048], shared gate_up [4096, 7168] and down
    [7168, 2048]; per layer q_a [1536, 7168], q_b [24576, 1536], kv_a [576, 7168], kv_b [32768, 512],
    o [7168, 16384]; per dense layer gate_up [36864, 7168], down [7168, 18432]"""
    E = experts // ep
    attn = [(1, 1536, 7168), (1, 24576, 1536), (1, 576, 7168), (1, 32768, 512), (1, 7168, 16384)]
    shapes = attn * layers + [(E, 4096, 7168), (E, 7168, 2048), (1, 4096, 7168), (1, 7168, 2048)] * moe_layers + \
        [(1, 36864, 7168), (1, 7168, 18432)] * dense_layers
    sfs, outs, items = [], [], (PackItem * len(shapes))()
    for i, (g, n, k) in enumerate(shapes):
        sfs.append(torch.pow(2.0, torch.randint(-30, 0, (g, -(-n // 128), -(-k // 128)), device="cuda").float()))
        outs.append(torch.empty(g * ((-(-k // 128) + 3) // 4) * (-(-n // 4) * 4), dtype=torch.int32, device="cuda"))
        items[i] = PackItem(sfs[-1].data_ptr(), outs[-1].data_ptr(), g, n, k, 0, 0, 0)
    blocks = pack_prepare(items)
    items_d = torch.frombuffer(bytearray(bytes(items)), dtype=torch.uint8).cuda()
    nbytes = sum(t.numel() * 4 for t in sfs) + sum(t.numel() * 4 for t in outs)
    lib.rfk_cuda_ue8m0_pack_items.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p,
                                              ctypes.c_void_p]
    lib.rfk_cuda_ue8m0_pack.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    print(f"  {name}: {len(shapes)} tensors, {blocks} blocks, {nbytes / 1e9:.3f} GB", flush=True)
    def ours():
        rc = lib.rfk_cuda_ue8m0_pack_items(items_d.data_ptr(), len(shapes), blocks, flag.data_ptr(),
                                           torch.cuda.current_stream().cuda_stream)
        if rc != 0:
            raise RuntimeError(f"rfk_cuda_ue8m0_pack_items: {rc}")
    def per_tensor():
        st = torch.cuda.current_stream().cuda_stream
        for (g, n, k), sf, out in zip(shapes, sfs, outs):
            rc = lib.rfk_cuda_ue8m0_pack(sf.data_ptr(), out.data_ptr(), g, n, k, flag.data_ptr(), st)
            if rc != 0:
                raise RuntimeError(f"rfk_cuda_ue8m0_pack: {rc}")
    def check():
        ok = True
        for (g, n, k), sf, out in zip(shapes, sfs, outs):
            ref = torch_ue8m0_pack(sf, n)
            ok &= torch.equal(out, ref.as_strided((out.numel(),), (1,)))
        return "DeepGEMM torch path per tensor " + ("equal" if ok else "DIFFERENT")
    run_case(name, nbytes, ours, None, None, check)
    t = bench({"grouped": ours, "per tensor": per_tensor, "copy": copy_fn(nbytes)})
    print(f"  {name}: one launch {t['grouped'] * 1e6:.1f} us ({t['copy'] / t['grouped']:.3f} of copy), one launch per "
          f"tensor {t['per tensor'] * 1e6:.1f} us ({t['copy'] / t['per tensor']:.3f} of copy), copy "
          f"{t['copy'] * 1e6:.1f} us", flush=True)


def main():
    p = torch.cuda.get_device_properties(0)
    print(f"kernels_bench: {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, "
          f"triton {triton.__version__ if triton else 'absent'}", flush=True)
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    cases = [
        ("experts w13 256x2x[2048,6144]", lambda n: case_experts(n, 256, 2048, 6144, 2)),
        ("experts w2 256x[6144,2048]", lambda n: case_experts(n, 256, 6144, 2048, 1)),
        ("dense [16384,6144] bf16", lambda n: case_dense(n, 16384, 6144, RFK_BF16)),
        ("tp8 pack [6144,16384] dim1", lambda n: case_dense(n, 6144, 16384, RFK_BF16, 8)),
        ("fp32 src [16384,6144]", lambda n: case_dense(n, 16384, 6144, RFK_FP32)),
        ("cast fp32->bf16 [16384,6144] (torch = .to)", lambda n: case_cast(n, 16384, 6144)),
        ("refresh: MLA absorb GLM-5 TP8, 78 layers", lambda n: case_absorb(n, 78, 8, 192, 256, 512)),
        ("refresh: requant ue8m0 w13 256x[4096,6144] in place", lambda n: case_requant(n, 256, 4096, 6144)),
        ("finalize: ue8m0 pack DSv3 w13 scales 256x[4096,7168]", lambda n: case_pack(n, 256, 4096, 7168)),
        ("finalize: ue8m0 pack DSv3 w2 scales 256x[7168,2048]", lambda n: case_pack(n, 256, 7168, 2048)),
        ("finalize: ue8m0 pack, a whole DSv3 layer set (EP8, one launch)", lambda n: case_pack_set(n)),
        ("requant cast (SM100): experts w13 256x2x[2048,6144]", lambda n: case_experts(n, 256, 2048, 6144, 2, mode=2)),
    ]
    for i, (name, fn) in enumerate(cases):
        if only is None or str(i) in only:
            try:
                fn(name)
            except Exception:  # one broken case must not hide the others
                traceback.print_exc()
                torch.cuda.empty_cache()
    print()
    print(f"| case | GB moved | ours GB/s | copy GB/s | triton GB/s | torch GB/s | ours/copy | ours/triton | "
          f"ours/torch | bytes equal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.3f} | "
              f"{r[7]:.2f} | {r[8]:.1f} | {r[9]} |")


if __name__ == "__main__":  # bench/delta_bench.py imports bench() and copy_fn()
    main()
