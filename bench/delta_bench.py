"""delta_bench.py LIB.so: the delta kernels (kernels/delta.cu through ctypes) against a device-to-device
copy of the same region bytes, in one run on one GPU (timing: kernels_bench.bench, interleaved rounds
with a rotating start, median of 7).
  encode   reads next + old (2n bytes), writes the patch and the changed bytes into old; its peer,
           the copy of n bytes, also moves 2n bytes: ratio = t_copy / t_encode (target >= 0.8).
           Two versions A and B alternate as next, so every call sees the same changes.
           Its byte floor: DRAM writes whole 32-byte sectors, so old := next writes every sector
           with a change; floor bytes = 2n + 32 x (sectors with a change) + patch bytes, moved at
           the copy's rate of the same run: floor/copy = 2n / floor bytes (the best encode/copy
           possible), encode/floor = t_floor / t_encode.
  apply    validates the patch, then writes its elements into dst (A -> B, then B -> A);
           ratio = t_copy / t_apply (how much cheaper than rewriting the region), and patch GB/s.
  digest   reads n bytes: t_copy / t_digest (the copy moves twice the bytes; 2.0 is the read floor).
Cases: bf16 and FP8 regions at 0.3% and 3% of elements changed (uniformly random), one 1 GiB region;
GLM-5-like experts (256 x [2048, 6144] FP8 codes, 0.3%, + their fp32 scales at 0.4%: 512 regions in
one call). Patch bytes over dense bytes are printed with each case; every patch is applied and
checked against B byte for byte, and its digest against the digest kernel.
Run: ninja bench_kernels (on a GPU machine), or python3 bench/delta_bench.py build/obj/libkernels_cuda.so
"""
import sys

try:
    import torch
except ImportError:
    print("delta_bench: skipped: no torch")
    sys.exit(0)
if not torch.cuda.is_available():
    print("delta_bench: skipped: no CUDA device")
    sys.exit(0)

from kernels_bench import bench, copy_fn  # noqa: E402  (same directory; same library argument)
from delta_lib import Out, Region, Span, Status, Target, bound, load  # noqa: E402

lib = load(sys.argv[1] if len(sys.argv) > 1 else "build/obj/libkernels_cuda.so")


def stream():
    return torch.cuda.current_stream().cuda_stream


def check(rc, what):
    if rc != 0:
        raise RuntimeError(f"{what}: rc {rc}")


def versions(nbytes, esize, density):
    """A (random bytes) and B (A with `density` of its elements changed, uniformly at random)"""
    a = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device="cuda")
    b = a.clone()
    el = nbytes // esize
    mask = torch.rand(el, device="cuda") < density
    bv = b.view(el, esize)
    bv[mask, 0] ^= 1  # flip the low bit of the first byte: the element's bytes differ
    pad = (-nbytes) % 32
    diff = torch.nn.functional.pad(a != b, (0, pad)).view(-1, 32).any(1)
    return a, b, int(mask.sum()), int(diff.sum())


class Case:
    """regions: list of (nbytes, esize, density); all encoded in one call"""

    def __init__(self, name, regions):
        self.name = name
        self.A, self.B, self.changed, self.sectors = [], [], 0, 0
        for n, e, d in regions:
            a, b, k, sec = versions(n, e, d)
            self.A.append(a), self.B.append(b)
            self.changed += k
            self.sectors += sec
        self.e = [e for _, e, _ in regions]
        self.n = [n for n, _, _ in regions]
        self.total = sum(self.n)
        self.slot = [a.clone() for a in self.A]        # the trainer's old bytes, starts at A
        self.patch = [torch.empty(bound(n), dtype=torch.uint8, device="cuda") for n in self.n]
        R = len(regions)
        self.out = torch.empty(R * 32, dtype=torch.uint8, device="cuda")
        mk = lambda nxt: (Region * R)(*[Region(x.data_ptr(), s.data_ptr(), n, e, p.data_ptr(), p.numel())
                                        for x, s, n, e, p in zip(nxt, self.slot, self.n, self.e, self.patch)])
        self.enc = [mk(self.B), mk(self.A)]          # slot holds A: encode B; then slot holds B: encode A
        sb = lib.rfk_delta_scratch_bytes(self.enc[0], R)
        self.scratch = torch.empty(max(sb, 8), dtype=torch.uint8, device="cuda")
        self.R, self.parity = R, 0

    def encode(self):
        check(lib.rfk_cuda_delta_encode(self.enc[self.parity], self.R, self.out.data_ptr(), self.scratch.data_ptr(),
                                        self.scratch.numel(), stream()), "encode")
        self.parity ^= 1

    def results(self):
        raw = self.out.cpu().numpy().tobytes()
        return [Out.from_buffer_copy(raw, 32 * i) for i in range(self.R)]


def run(case):
    # encode once A -> B for the patches and their sizes, and check the result
    case.encode()
    torch.cuda.synchronize()
    res = case.results()
    if any(r.status != 0 for r in res):
        raise RuntimeError("a patch overflowed its bound")
    pab = [p[:r.size].clone() for p, r in zip(case.patch, res)]
    case.encode()  # B -> A, slot back at A
    torch.cuda.synchronize()
    pba = [p[:r.size].clone() for p, r in zip(case.patch, case.results())]
    patch_bytes = sum(r.size for r in res)
    changed = sum(r.changed for r in res)
    # apply: dst alternates A -> B -> A
    R = case.R
    dst = [a.clone() for a in case.A]
    status = torch.empty(R * 40, dtype=torch.uint8, device="cuda")
    tg = [(Target * R)(*[Target(p.data_ptr(), p.numel(), d.data_ptr(), n, e)
                         for p, d, n, e in zip(ps, dst, case.n, case.e)]) for ps in (pab, pba)]
    par = [0]

    def apply():
        check(lib.rfk_cuda_delta_apply(tg[par[0]], R, status.data_ptr(), stream()), "apply")
        par[0] ^= 1

    apply()
    torch.cuda.synchronize()
    st = status.cpu().numpy().tobytes()
    codes = [Status.from_buffer_copy(st, 40 * i).code for i in range(R)]
    equal = all(torch.equal(d, b) for d, b in zip(dst, case.B)) and not any(codes)
    spans = (Span * R)(*[Span(d.data_ptr(), n) for d, n in zip(dst, case.n)])
    dig = torch.empty(R, dtype=torch.int64, device="cuda")

    def digest():
        check(lib.rfk_cuda_delta_digest(spans, R, dig.data_ptr(), stream()), "digest")

    digest()
    torch.cuda.synchronize()
    want = [r.digest for r in res]
    got = [int(x) & (2 ** 64 - 1) for x in dig.cpu().tolist()]
    equal = equal and got == want
    apply()  # dst back at A
    t = bench({"encode": case.encode, "apply": apply, "digest": digest, "copy": copy_fn(2 * case.total)})
    gb = case.total / 1e9
    floor = 2 * case.total + 32 * case.sectors + patch_bytes  # bytes the encode must move at least
    enc = t["copy"] / t["encode"]
    print(f"  {case.name}: {gb:.2f} GB, {changed} elements changed, "
          f"patch {patch_bytes / case.total * 100:.3f}% of dense; encode {t['encode'] * 1e3:.3f} ms, apply "
          f"{t['apply'] * 1e3:.3f} ms, digest {t['digest'] * 1e3:.3f} ms, copy {t['copy'] * 1e3:.3f} ms; "
          f"{'applied bytes and digests equal' if equal else 'MISMATCH'}", flush=True)
    return (case.name, gb, patch_bytes / case.total, 2 * case.total / t["encode"] / 1e9, enc,
            t["copy"] / t["apply"], patch_bytes / t["apply"] / 1e9, t["copy"] / t["digest"], equal,
            2 * case.total / floor, enc * floor / (2 * case.total))


def main():
    p = torch.cuda.get_device_properties(0)
    print(f"delta_bench: {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}", flush=True)
    G = 1 << 30
    cases = [
        ("bf16 1 GiB, 3%", [(G, 2, 0.03)]),
        ("bf16 1 GiB, 0.3%", [(G, 2, 0.003)]),
        ("fp8 1 GiB, 0.3%", [(G, 1, 0.003)]),
        ("fp8 1 GiB, 3%", [(G, 1, 0.03)]),
        ("fp8 experts 256x[2048,6144] 0.3% + scales 0.4% (512 regions)",
         [(2048 * 6144, 1, 0.003)] * 256 + [(16 * 48 * 4, 4, 0.004)] * 256),
    ]
    rows = []
    for name, regions in cases:
        c = Case(name, regions)
        rows.append(run(c))
        del c
        torch.cuda.empty_cache()
    print()
    print("| case | GB | patch/dense | encode GB/s (next+old) | encode/copy | copy/apply | apply patch GB/s | "
          "copy/digest | bytes equal | floor/copy | encode/floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2] * 100:.3f}% | {r[3]:.0f} | {r[4]:.3f} | {r[5]:.1f} | {r[6]:.0f} | "
              f"{r[7]:.2f} | {'yes' if r[8] else 'NO'} | {r[9]:.3f} | {r[10]:.3f} |")


main()
