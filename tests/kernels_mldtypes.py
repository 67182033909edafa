"""kernels_mldtypes.py DIR SRC_DTYPE UE8M0 ROWS COLS SRC_LD Q_LD SCALE_LD

Independent check of the C block-FP8 reference (kernels/ref.c), called by tests/test_kernels.c:
DIR holds src (bf16 or fp32, row pitch SRC_LD), q (e4m3 bytes, row pitch Q_LD) and scale (fp32,
row pitch SCALE_LD) as the C code wrote them. This script quantizes src again with numpy float32
arithmetic and ml_dtypes.float8_e4m3fn (per_block_cast_to_fp8 style: zero-pad to 128-multiples, view
blocks, amax, clamp 1e-4, scale = amax/448, q = cast(clip(x * (448/amax)))) and compares bytes.
Exit 0 equal, 1 different, 3 when numpy or ml_dtypes is missing.
"""
import sys

try:
    import numpy as np
    import ml_dtypes
except ImportError:
    print("kernels_mldtypes: numpy/ml_dtypes missing")
    sys.exit(3)


def main():
    d, sdt, ue8m0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rows, cols, src_ld, q_ld, scale_ld = (int(a) for a in sys.argv[4:9])
    if sdt == "bf16":
        raw = np.fromfile(f"{d}/src", dtype=np.uint16).reshape(rows, src_ld)[:, :cols]
        x = (raw.astype(np.uint32) << 16).view(np.float32)
    else:
        x = np.fromfile(f"{d}/src", dtype=np.float32).reshape(rows, src_ld)[:, :cols]
    q = np.fromfile(f"{d}/q", dtype=np.uint8).reshape(rows, q_ld)[:, :cols]
    sr, sc = -(-rows // 128), -(-cols // 128)
    scale = np.fromfile(f"{d}/scale", dtype=np.float32).reshape(sr, scale_ld)[:, :sc]

    pad = np.zeros((sr * 128, sc * 128), dtype=np.float32)
    pad[:rows, :cols] = x
    blocks = pad.reshape(sr, 128, sc, 128)
    amax = np.maximum(np.abs(blocks).max(axis=(1, 3)), np.float32(1e-4)).astype(np.float32)
    sf = (amax / np.float32(448.0)).astype(np.float32)
    if ue8m0:
        mant, exp = np.frexp(sf.astype(np.float64))
        sf = np.where(mant == 0.5, sf, np.ldexp(1.0, exp)).astype(np.float32)
        mul = (np.float32(1.0) / sf).astype(np.float32)
    else:
        mul = (np.float32(448.0) / amax).astype(np.float32)
    y = (blocks * mul[:, None, :, None]).astype(np.float32)
    y = np.clip(y, np.float32(-448.0), np.float32(448.0))
    want_q = y.astype(ml_dtypes.float8_e4m3fn).view(np.uint8).reshape(sr * 128, sc * 128)[:rows, :cols]

    bad_s = np.argwhere(sf.view(np.uint32) != scale.view(np.uint32))
    bad_q = np.argwhere(want_q != q)
    for r, c in bad_s[:5]:
        print(f"  ml_dtypes: scale[{r}][{c}] C {scale[r, c]!r}, numpy {sf[r, c]!r}")
    for r, c in bad_q[:5]:
        print(f"  ml_dtypes: q[{r}][{c}] C 0x{q[r, c]:02x}, ml_dtypes 0x{want_q[r, c]:02x} (x {x[r, c]!r})")
    print(f"  ml_dtypes {sdt} ue8m0={ue8m0} [{rows} x {cols}]: {len(bad_q)} q and {len(bad_s)} scale mismatches")
    sys.exit(0 if len(bad_q) == 0 and len(bad_s) == 0 else 1)


main()
