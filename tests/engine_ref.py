"""engine_ref.py: the engine format of a model, computed from its full HF state dict with numpy.

An independent reference for the receivers' bytes: it knows the families (MODELS.md) and how vLLM
loads a checkpoint (fusions, TP/EP splits, block FP8 per DESIGN.md section 7 with each checkpoint
tensor quantized whole, as an FP8 checkpoint holds it, then sliced in 128-blocks), but nothing of
refit's tables. Used by tests/test_python.py (numpy, CI) and tests/gpu_e2e.py (the device machine).

    engine_format(family, cfg, sd, tp=, ep=, position=, fp8=, ue8m0=) -> {name: numpy array}

sd maps HF names to numpy arrays (BF16 or float32); the result holds, for one engine GPU (position
q of a replica: TP rank q % tp, EP rank q), every destination tensor (BF16, float32, FP8 weights with
float32 `<name>_scale_inv`) and every derived tensor (MLA W_UK_T, W_UV). BF16 and FP8 are
ml_dtypes.bfloat16 / float8_e4m3fn; where ml_dtypes is missing (the device machine may lack it)
they are uint16 / uint8 holding the same bits, cast by torch (round to nearest even, as ml_dtypes).
"""
import re

import numpy as np

try:
    import ml_dtypes

    BF16, FP8 = np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float8_e4m3fn)

    def to_f32(x):
        return np.asarray(x).astype(np.float32)

    def _cast(x, dt):
        return np.asarray(x, dtype=np.float32).astype(dt)
except ImportError:
    import torch

    BF16, FP8 = np.dtype(np.uint16), np.dtype(np.uint8)
    _TORCH = {BF16: (torch.bfloat16, torch.int16), FP8: (torch.float8_e4m3fn, torch.uint8)}

    def to_f32(x):
        x = np.asarray(x)
        if x.dtype == np.float32:
            return x
        t = torch.from_numpy(np.ascontiguousarray(x).view(np.int16 if x.dtype == BF16 else np.uint8))
        return t.view(_TORCH[x.dtype][0]).float().numpy()

    def _cast(x, dt):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(_TORCH[dt][0])
        return t.view(_TORCH[dt][1]).numpy().view(dt)

B = 128


def model_config(path):
    """The fields of a models/<name>.lua file (flat `key = value` pairs) as a dict."""
    cfg = {}
    for k, v in re.findall(r"(\w+)\s*=\s*(\"[^\"]*\"|[\w.]+)", open(path).read()):
        if v.startswith('"'):
            cfg[k] = v.strip('"')
        elif v in ("true", "false"):
            cfg[k] = v == "true"
        elif re.fullmatch(r"-?\d+", v):
            cfg[k] = int(v)
    return cfg


def quantize(x, ue8m0=False):
    """Block FP8 of a 2-D array: (q float8_e4m3fn, scale float32 [ceil(r/128), ceil(c/128)])."""
    x = to_f32(x)
    rows, cols = x.shape
    sr, sc = -(-rows // B), -(-cols // B)
    pad = np.zeros((sr * B, sc * B), dtype=np.float32)
    pad[:rows, :cols] = x
    blocks = pad.reshape(sr, B, sc, B)
    amax = np.maximum(np.abs(blocks).max(axis=(1, 3)), np.float32(1e-4)).astype(np.float32)
    scale = (amax / np.float32(448.0)).astype(np.float32)
    if ue8m0:  # the smallest power of two >= scale
        mant, exp = np.frexp(scale.astype(np.float64))
        scale = np.where(mant == 0.5, scale, np.ldexp(1.0, exp)).astype(np.float32)
        mul = (np.float32(1.0) / scale).astype(np.float32)
    else:
        mul = (np.float32(448.0) / amax).astype(np.float32)
    y = np.clip((blocks * mul[:, None, :, None]).astype(np.float32), -448.0, 448.0)
    q = _cast(y, FP8).reshape(sr * B, sc * B)[:rows, :cols]
    return np.ascontiguousarray(q), scale


class _Model:
    """The destination tensors of one engine GPU, built part by part."""

    def __init__(self, sd, fp8, ue8m0):
        self.sd, self.fp8, self.ue8m0, self.out, self._q = sd, fp8, ue8m0, {}, {}

    def src(self, name):
        x = self.sd[name]
        return x.reshape(x.shape[0], -1) if x.ndim == 1 else x

    def quant(self, name):
        if name not in self._q:
            self._q[name] = quantize(self.src(name), self.ue8m0)
        return self._q[name]

    def cast(self, name, dtype, rows=None, cols=None):
        """A bf16/fp32 destination: a slice of one source, cast (bf16 -> fp32 exact, fp32 -> bf16 RNE)."""
        x = self.sd[name]
        if rows is not None:
            x = x[rows[0]:rows[1]]
        if cols is not None:
            x = x[:, cols[0]:cols[1]]
        if x.dtype == dtype:
            return np.ascontiguousarray(x)
        return np.ascontiguousarray(to_f32(x) if dtype == np.float32 else _cast(to_f32(x), dtype))

    def weight(self, parts, quantized=True):
        """A weight fused from parts (source, (r0, r1), (c0, c1)) along dim 0: bf16, or (q, scale)
        from each source quantized whole then cut in whole blocks."""
        if not (self.fp8 and quantized):
            return np.concatenate([self.cast(n, BF16, r, c).reshape(r[1] - r[0], -1) for n, r, c in parts]), None
        qs, ss = [], []
        for n, (r0, r1), (c0, c1) in parts:
            q, s = self.quant(n)
            rows, cols = q.shape
            for a, b, total in ((r0, r1, rows), (c0, c1, cols)):
                assert a % B == 0 and (b % B == 0 or b == total), f"{n}: a TP/EP cut at {a}..{b} splits an FP8 block"
            qs.append(q[r0:r1, c0:c1])
            ss.append(s[r0 // B:-(-r1 // B), c0 // B:-(-c1 // B)])
        return np.concatenate(qs), np.concatenate(ss)

    def put(self, name, w, scale):
        self.out[name] = np.ascontiguousarray(w)
        if scale is not None:
            self.out[name + "_scale_inv"] = np.ascontiguousarray(scale)

    def put_experts(self, name, items):
        """[E_local, ...] stacks of per-expert weights (each (w, scale))."""
        self.put(name, np.stack([w for w, _ in items]), None if items[0][1] is None else np.stack([s for _, s in items]))

    def full(self, name):
        x = self.src(name)
        return (0, x.shape[0]), (0, x.shape[1])


def _split(n, r, tp):
    assert n % tp == 0, f"{n} not divisible by tp {tp}"
    return r * (n // tp), (r + 1) * (n // tp)


def _heads(n, heads, r, tp, replicate=False):
    """Rows of TP rank r of a [heads * d, ...] tensor; KV heads replicate when tp exceeds them."""
    if heads % tp == 0:
        return _split(n, r, tp)
    assert replicate and tp % heads == 0, f"tp {tp} does not divide {heads} heads"
    h = r * heads // tp
    return h * (n // heads), (h + 1) * (n // heads)


def _rep(m, name):
    """a replicated part (the whole source)"""
    return (name, *m.full(name))


def _col(m, name, r, tp, heads=None, replicate=False):
    """a column-parallel part (rows split)"""
    rows, cols = m.full(name)
    rr = _heads(rows[1], heads, r, tp, replicate) if heads else _split(rows[1], r, tp)
    return name, rr, cols


def _row(m, name, r, tp):
    """a row-parallel part (columns split)"""
    rows, cols = m.full(name)
    return name, rows, _split(cols[1], r, tp)


def _experts(m, p, E, tp, ep, q):
    """FusedMoE w13 [E_local, 2I, H] = per expert [gate; up], w2 [E_local, H, I]; EP: vLLM linear
    placement (E // ep each, the remainder to the first ranks), no TP split; else TP split."""
    if ep > 1:
        base, rem = E // ep, E % ep
        first, n, r, split = q * base + min(q, rem), base + (q < rem), 0, 1
    else:
        first, n, r, split = 0, E, q % tp, tp
    e13, e2 = [], []
    for e in range(first, first + n):
        x = f"{p}mlp.experts.{e}."
        e13.append(m.weight([_col(m, x + "gate_proj.weight", r, split), _col(m, x + "up_proj.weight", r, split)]))
        e2.append(m.weight([_row(m, x + "down_proj.weight", r, split)]))
    m.put_experts(p + "mlp.experts.w13_weight", e13)
    m.put_experts(p + "mlp.experts.w2_weight", e2)


def _qwen3_attention(m, c, p, r, tp):
    a = p + "self_attn."
    m.put(a + "qkv_proj.weight", *m.weight([
        _col(m, a + "q_proj.weight", r, tp, c["heads"]),
        _col(m, a + "k_proj.weight", r, tp, c["kv_heads"], replicate=True),
        _col(m, a + "v_proj.weight", r, tp, c["kv_heads"], replicate=True)]))
    m.put(a + "o_proj.weight", *m.weight([_row(m, a + "o_proj.weight", r, tp)]))
    for n in (a + "q_norm.weight", a + "k_norm.weight", p + "input_layernorm.weight",
              p + "post_attention_layernorm.weight"):
        m.put(n, m.cast(n, BF16), None)


def _qwen3(m, c, tp, ep, q, moe):
    r = q % tp
    m.put("model.embed_tokens.weight", *m.weight([_col(m, "model.embed_tokens.weight", r, tp)], quantized=False))
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        _qwen3_attention(m, c, p, r, tp)
        if moe:
            m.put(p + "mlp.gate.weight", m.cast(p + "mlp.gate.weight", BF16), None)
            _experts(m, p, c["experts"], tp, ep, q)
        else:
            m.put(p + "mlp.gate_up_proj.weight", *m.weight([_col(m, p + "mlp.gate_proj.weight", r, tp),
                                                            _col(m, p + "mlp.up_proj.weight", r, tp)]))
            m.put(p + "mlp.down_proj.weight", *m.weight([_row(m, p + "mlp.down_proj.weight", r, tp)]))
    m.put("model.norm.weight", m.cast("model.norm.weight", BF16), None)
    if not c.get("tie_word_embeddings"):
        m.put("lm_head.weight", *m.weight([_col(m, "lm_head.weight", r, tp)], quantized=False))


def _mla_absorb(kv_b, scale, heads, nope, v, lora):
    """vLLM's W_UK_T [h, nope, lora] and W_UV [h, lora, v] from kv_b [h*(nope+v), lora] (dequantized
    to bf16 first: bf16_rne(f32(q) * scale))."""
    if scale is not None:
        s = np.repeat(np.repeat(scale, B, axis=0), B, axis=1)[:kv_b.shape[0], :kv_b.shape[1]]
        w = _cast((to_f32(kv_b) * s).astype(np.float32), BF16)
    else:
        w = kv_b
    w = w.reshape(heads, nope + v, lora)
    return np.ascontiguousarray(w[:, :nope, :]), np.ascontiguousarray(w[:, nope:, :].transpose(0, 2, 1))


def _mla(m, c, tp, ep, q, indexer, engine):
    r, N, H = q % tp, c["heads"], c["hidden"]
    nope, v, lora = c["qk_nope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    m.put("model.embed_tokens.weight", *m.weight([_col(m, "model.embed_tokens.weight", r, tp)], quantized=False))
    for l in range(c["layers"] + c.get("mtp_layers", 0)):
        p, mtp = f"model.layers.{l}.", l >= c["layers"]
        if mtp and engine.get("mtp") is False:
            continue
        a = p + "self_attn."
        m.put(a + "fused_qkv_a_proj.weight", *m.weight([_rep(m, a + "q_a_proj.weight"),
                                                       _rep(m, a + "kv_a_proj_with_mqa.weight")]))
        m.put(a + "q_a_layernorm.weight", m.cast(a + "q_a_layernorm.weight", BF16), None)
        m.put(a + "q_b_proj.weight", *m.weight([_col(m, a + "q_b_proj.weight", r, tp, N)]))
        m.put(a + "kv_a_layernorm.weight", m.cast(a + "kv_a_layernorm.weight", BF16), None)
        kv_b, kv_s = m.weight([_col(m, a + "kv_b_proj.weight", r, tp, N)])
        m.put(a + "kv_b_proj.weight", kv_b, kv_s)
        uk, uv = _mla_absorb(kv_b, kv_s, N // tp, nope, v, lora)
        m.put(a + "W_UK_T", uk, None)
        m.put(a + "W_UV", uv, None)
        m.put(a + "o_proj.weight", *m.weight([_row(m, a + "o_proj.weight", r, tp)]))
        if indexer:
            x = a + "indexer."
            m.put(x + "wq_b.weight", *m.weight([_rep(m, x + "wq_b.weight")]))
            if engine.get("indexer_fusion") is False:
                m.put(x + "wk.weight", *m.weight([_rep(m, x + "wk.weight")]))
                m.put(x + "weights_proj.weight", m.cast(x + "weights_proj.weight", BF16), None)
            else:  # newer vLLM: [wk; weights_proj], one bf16 tensor
                m.put(x + "wk_weights_proj.weight", np.concatenate([m.cast(x + "wk.weight", BF16),
                                                                    m.cast(x + "weights_proj.weight", BF16)]), None)
            m.put(x + "k_norm.weight", m.cast(x + "k_norm.weight", np.float32), None)
            m.put(x + "k_norm.bias", m.cast(x + "k_norm.bias", np.float32), None)
        for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            m.put(p + n, m.cast(p + n, BF16), None)
        if l < c["first_dense"]:
            m.put(p + "mlp.gate_up_proj.weight", *m.weight([_col(m, p + "mlp.gate_proj.weight", r, tp),
                                                            _col(m, p + "mlp.up_proj.weight", r, tp)]))
            m.put(p + "mlp.down_proj.weight", *m.weight([_row(m, p + "mlp.down_proj.weight", r, tp)]))
        else:
            m.put(p + "mlp.gate.weight", m.cast(p + "mlp.gate.weight", BF16), None)
            m.put(p + "mlp.gate.e_score_correction_bias", m.cast(p + "mlp.gate.e_score_correction_bias", np.float32), None)
            _experts(m, p, c["experts"], tp, ep, q)
            s = p + "mlp.shared_experts."
            m.put(s + "gate_up_proj.weight", *m.weight([_col(m, s + "gate_proj.weight", r, tp),
                                                        _col(m, s + "up_proj.weight", r, tp)]))
            m.put(s + "down_proj.weight", *m.weight([_row(m, s + "down_proj.weight", r, tp)]))
        if mtp:
            for n in ("eh_proj.weight", "enorm.weight", "hnorm.weight", "shared_head.norm.weight"):
                m.put(p + n, m.cast(p + n, BF16), None)
    m.put("model.norm.weight", m.cast("model.norm.weight", BF16), None)
    m.put("lm_head.weight", *m.weight([_col(m, "lm_head.weight", r, tp)], quantized=False))


def engine_format(family, cfg, sd, *, tp, ep, position, fp8, ue8m0=False, engine=None):
    """{name: array} of engine GPU `position` (see the module docstring)."""
    m = _Model(sd, fp8, ue8m0)
    if family in ("qwen3", "qwen3_moe"):
        _qwen3(m, cfg, tp, ep, position, family == "qwen3_moe")
    elif family in ("glm_moe_dsa", "deepseek_v3"):
        _mla(m, cfg, tp, ep, position, family == "glm_moe_dsa", engine or {})
    else:
        raise ValueError(f"engine_ref: no family '{family}'")
    return m.out
