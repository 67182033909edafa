"""delta_lib.py: ctypes view of kernels/delta.h for bench/delta_bench.py and bench/delta_density.py."""
import ctypes

u64, c_int, vp = ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p


class Region(ctypes.Structure):
    _fields_ = [("next", vp), ("old", vp), ("n", u64), ("esize", c_int), ("patch", vp), ("cap", u64)]


class Out(ctypes.Structure):  # 32 bytes
    _fields_ = [("digest", u64), ("size", u64), ("changed", u64), ("entries", ctypes.c_uint32),
                ("status", ctypes.c_int32)]


class Target(ctypes.Structure):
    _fields_ = [("patch", vp), ("len", u64), ("dst", vp), ("n", u64), ("esize", c_int)]


class Status(ctypes.Structure):  # 40 bytes
    _fields_ = [("code", ctypes.c_int32), ("entry", ctypes.c_uint32), ("pos", ctypes.c_uint32),
                ("chunk", ctypes.c_uint32), ("got", u64), ("want", u64), ("key", u64)]


class Span(ctypes.Structure):
    _fields_ = [("p", vp), ("n", u64)]


def bound(n):
    """rfk_delta_bound: the largest patch of an n-byte region"""
    return 32 + (n + 3) // 4 * 4 + 12 * ((n + 16383) // 16384)


def load(path):
    lib = ctypes.CDLL(path)
    lib.rfk_delta_scratch_bytes.restype = u64
    lib.rfk_delta_scratch_bytes.argtypes = [ctypes.POINTER(Region), c_int]
    lib.rfk_cuda_delta_encode.argtypes = [ctypes.POINTER(Region), c_int, vp, vp, u64, vp]
    lib.rfk_cuda_delta_apply.argtypes = [ctypes.POINTER(Target), c_int, vp, vp]
    lib.rfk_cuda_delta_digest.argtypes = [ctypes.POINTER(Span), c_int, vp, vp]
    return lib
