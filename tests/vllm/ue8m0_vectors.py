"""ue8m0_vectors.py OUTDIR [SEED]: test vectors of vLLM 0.33's SM100 block-FP8 weight post-processing,
for the C reference (tests/test_kernels.c) and the CUDA kernels of rfk_*_requant_ue8m0 + rfk_*_ue8m0_pack.

Runs vLLM's own code on CPU tensors: fp8_utils.deepgemm_post_process_fp8_weight_block(w, s, (128, 128),
use_e8m0=True), which re-quantizes the weight to power-of-two scales in place
(requant_weight_ue8m0_inplace -> per_block_cast_to_fp8) and then calls
vllm.utils.deep_gemm.transform_sf_into_required_layout (the wrapper, with the UE8M0 cast on as on a
Blackwell GPU with VLLM_USE_DEEP_GEMM_E8M0). The wrapper's target is DeepGEMM's C++ op, which needs a
CUDA device (its kernels are JIT-compiled); `dg_transform_sf` below stands in for that one op only,
following DeepGEMM's csrc/apis/layout.hpp (SM100 branch: broadcast the 128-row block scales to every
row with index_select, then get_mn_major_tma_aligned_packed_ue8m0_tensor) and its PyTorch path
(get_mn_major_tma_aligned_packed_ue8m0_tensor_torch: exponent byte = bits >> 23, zero padding, 4 bytes
per int32 along K, MN-major with the MN extent aligned to 4). Everything else is vLLM's code.

Inputs are not stored: both sides draw them from the same 64-bit LCG (seed in the file).
File OUTDIR/<case>.bin, little endian:
  "RFUE8M01", int64 seed, groups, rows, cols, kind (1: requant + pack of a loaded fp8 weight, 2: pack
  of power-of-two scales), then for kind 1 the re-quantized weight (groups*rows*cols bytes) and its
  fp32 scales (groups*ceil(rows/128)*ceil(cols/128)), then the packed int32 tensor's whole storage
  (groups * ceil(ceil(cols/128)/4) * align(rows, 4) words), and its shape and strides (3 x 2 int64).
"""
import os
import struct
import sys

import torch

CASES = [  # name, groups, rows, cols, kind
    ("linear_256x256", 1, 256, 256, 1),
    ("linear_301x300", 1, 301, 300, 1),
    ("experts_3x130x200", 3, 130, 200, 1),
    ("experts_2x130x520", 2, 130, 520, 1),
    ("tiny_7x130", 1, 7, 130, 1),
    ("pack_2x250x7168", 2, 250, 7168, 2),
    ("pack_4x1x1", 4, 1, 1, 2),
]


class Lcg:
    """the generator of tests/test_kernels.c (ue8m0 vectors): state = state * A + C mod 2^64, out = state >> 33"""

    def __init__(self, seed):
        self.s = seed & (2**64 - 1)

    def __call__(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        return self.s >> 33


def inputs(seed, groups, rows, cols, kind):
    """the loaded weight (fp8 codes, kind 1) and scales: same draws, same order as the C test"""
    rnd = Lcg(seed)
    sr, sk = -(-rows // 128), -(-cols // 128)
    codes = None
    if kind == 1:
        codes = bytearray(groups * rows * cols)
        for i in range(len(codes)):
            c = rnd() & 0xFF
            if c & 0x7F == 0x7F:  # no NaN codes
                c ^= 1
            codes[i] = c
        for r in range(min(rows, 128)):  # group 0, block (0, 0): all +-0 (amax clamps to 1e-4)
            for c in range(min(cols, 128)):
                codes[r * cols + c] &= 0x80
    bits = []
    for _ in range(groups * sr * sk):
        if kind == 1:  # a loaded scale: any fp32 in [2^-13, 2^-7)
            e = 127 - 8 - rnd() % 6
            bits.append(e << 23 | (rnd() & 0x7FFFFF))
        else:  # a re-quantized scale: a power of two
            bits.append((100 + rnd() % 40) << 23)
    scale = torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32).reshape(groups, sr, sk)
    return codes, scale


def dg_transform_sf(sf, mn, k, recipe, num_groups=None, is_sfa=None, disable_ue8m0_cast=False):
    """DeepGEMM's transform_sf_into_required_layout on SM100 for fp32 scales (see the module docstring)"""
    gran_mn = recipe[0] if is_sfa else recipe[1]
    gran_k = recipe[2]
    assert sf.dtype == torch.float32 and gran_k in (32, 128), "only the fp32 SM100 branch is modelled"
    assert not disable_ue8m0_cast, "SM100 with fp32 scales needs the UE8M0 cast"
    b = sf if sf.dim() == 3 else sf.unsqueeze(0)
    assert b.shape[1] == -(-mn // gran_mn) and b.shape[2] == -(-k // gran_k), (tuple(sf.shape), mn, k)
    assert num_groups is None or b.shape[0] == num_groups
    if gran_mn != 1:
        b = b.index_select(-2, torch.arange(mn) // gran_mn)
    bits = b.contiguous().view(torch.int32)
    # DeepGEMM's pack kernels trap on a scale with a sign or mantissa bit (DG_TRAP_ONLY_DEVICE_ASSERT)
    assert not bool(((bits & -0x7F800001) != 0).any()), "a scale is not a power of two"
    codes = (bits >> 23).to(torch.uint8)
    g, rows, ks = codes.shape
    amn, ak = -(-rows // 4) * 4, -(-ks // 4) * 4
    padded = torch.zeros(g, amn, ak, dtype=torch.uint8)
    padded[:, :rows, :ks] = codes
    padded = padded.view(-1).view(torch.int32).view(g, amn, ak // 4)
    out = torch.empty_strided((g, amn, ak // 4), (amn * (ak // 4), 1, amn), dtype=torch.int32)
    out.copy_(padded)
    out = out[:, :rows]
    return out if sf.dim() == 3 else out.squeeze(0)


def vllm_post_process(codes, scale, groups, rows, cols, kind):
    import vllm.utils.deep_gemm as dg
    from vllm.model_executor.layers.quantization.utils import fp8_utils

    dg._transform_sf_into_required_layout_impl = dg_transform_sf  # the C++ op (see above)
    dg.is_deep_gemm_e8m0_used = lambda: True  # Blackwell + VLLM_USE_DEEP_GEMM_E8M0 (the default)
    if kind == 1:
        w = torch.frombuffer(bytearray(codes), dtype=torch.uint8).view(torch.float8_e4m3fn).reshape(groups, rows, cols)
        s = scale.clone()
        if groups == 1:  # a linear: 2-D weight and scale, as Fp8LinearMethod passes them
            w, s = w[0], s[0]
        w2, packed = fp8_utils.deepgemm_post_process_fp8_weight_block(w, s, (128, 128), use_e8m0=True)
        assert w2.data_ptr() == w.data_ptr(), "vLLM re-quantizes the weight in place"
        return w.reshape(groups, rows, cols), s.reshape(scale.shape), packed
    packed = dg.transform_sf_into_required_layout(sf=scale, mn=rows, k=cols, recipe=(1, 128, 128), num_groups=groups,
                                                  is_sfa=False)
    return None, scale, packed


def write_case(path, seed, groups, rows, cols, kind, w, s, packed):
    st = packed.untyped_storage()
    words = groups * ((-(-cols // 128) + 3) // 4) * (-(-rows // 4) * 4)
    assert packed.storage_offset() == 0 and st.nbytes() == 4 * words, (st.nbytes(), words)
    with open(path + ".tmp", "wb") as f:
        f.write(b"RFUE8M01" + struct.pack("<6q", seed, groups, rows, cols, kind, 0))
        if kind == 1:
            f.write(w.contiguous().view(torch.uint8).numpy().tobytes())
            f.write(s.contiguous().numpy().tobytes())
        f.write(bytes(st))
        shape = list(packed.shape) if packed.dim() == 3 else [1] + list(packed.shape)
        stride = list(packed.stride()) if packed.dim() == 3 else [words] + list(packed.stride())
        f.write(struct.pack("<6q", *shape, *stride))
    os.replace(path + ".tmp", path)


def main():
    out = sys.argv[1]
    seed0 = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    os.makedirs(out, exist_ok=True)
    for i, (name, groups, rows, cols, kind) in enumerate(CASES):
        seed = seed0 * 1000 + i
        codes, scale = inputs(seed, groups, rows, cols, kind)
        w, s, packed = vllm_post_process(codes, scale, groups, rows, cols, kind)
        write_case(os.path.join(out, name + ".bin"), seed, groups, rows, cols, kind, w, s, packed)
        print(f"{name}: groups {groups} [{rows} x {cols}] -> int32 {list(packed.shape)} strides {list(packed.stride())}")


if __name__ == "__main__":
    main()
