"""engine_ref.py: a model's tensors on both sides of refit, computed with numpy from the full HF state dict.

An independent reference for the receivers' bytes. It knows the families (MODELS.md section 6), what
transformers 5 modules hold (fused experts, masters in fp32 or bf16, no MTP layers unless the trainer
keeps them) and how vLLM 0.33 holds a checkpoint after loading (fusions, TP/EP splits, block FP8 per
DESIGN.md section 7 with each checkpoint tensor quantized whole, as an FP8 checkpoint holds it, then
sliced in 128-blocks; names, aliases, vocabulary padding, MLA's derived W_UK_T/W_UV), but nothing of
refit's tables or generator. Used by tests/test_python.py (numpy, CI) and tests/gpu_e2e.py (the device
machine).

    plan_options(models/plans/P.lua) -> {trainer: hf_sources' options, fp8, exclude, engine}
    hf_sources(family, cfg, dtype=, dtype_except=, experts=, mtp=) -> {name: (shape, dtype name)}
    engine_format(family, cfg, sd, tp=, ep=, position=, fp8=, ue8m0=, engine=, exclude=, requant=) -> EngineRank
    ue8m0_pack(scales, rows, cols) -> int32 storage (SM100: DeepGEMM's packed scales of fp32 ones)

sd maps HF names to numpy arrays (bf16 or float32) as hf_sources lists them: fused experts
(`mlp.experts.gate_up_proj` [E, 2I, H], gate rows first, `mlp.experts.down_proj` [E, H, I]) or
per-expert modules (transformers 4.x); MTP layers only when the trainer holds them (then their
drafter tensors are computed too). The EngineRank holds, for one engine GPU (position q of a replica:
TP rank q % tp, EP rank q), every tensor under every name vLLM registers it under (an alias maps to
the same array object), and MLA's W_UK_T / W_UV as numpy views with vLLM's strides: of a new bf16
storage [lora, h*(nope+v)] for an FP8 kv_b_proj (bf16 of the dequantized weight, transposed), of
kv_b_proj's own array for a bf16 one. Vocabulary rows are padded as vLLM pads them; pad_rows says how
many trailing rows hold no weight (zeros here: the engine's bytes there are never written).
BF16 and FP8 are ml_dtypes.bfloat16 / float8_e4m3fn; where ml_dtypes is missing (the device machine
may lack it) they are uint16 / uint8 holding the same bits, cast by torch (round to nearest even).
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
VOCAB_PAD = 64  # vLLM's VocabParallelEmbedding pads the vocabulary to a multiple of 64, then splits it evenly
NUMPY = {"bf16": BF16, "fp32": np.dtype(np.float32)}


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


def pow2_ceil(s):
    """the smallest power of two >= each (positive, finite) fp32 scale"""
    mant, exp = np.frexp(s.astype(np.float64))
    return np.where(mant == 0.5, s, np.ldexp(1.0, exp)).astype(np.float32)


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
    if ue8m0:
        scale = pow2_ceil(scale)
        mul = (np.float32(1.0) / scale).astype(np.float32)
    else:
        mul = (np.float32(448.0) / amax).astype(np.float32)
    y = np.clip((blocks * mul[:, None, :, None]).astype(np.float32), -448.0, 448.0)
    q = _cast(y, FP8).reshape(sr * B, sc * B)[:rows, :cols]
    return np.ascontiguousarray(q), scale


def requant_ue8m0(q, scale):
    """vLLM's re-quantization of a loaded block-FP8 weight to power-of-two scales on SM100 (its
    requant_weight_ue8m0_inplace, as tests/vllm/SM100.md describes it): per 128x128 block the
    dequantized x = f32(q) * scale, scale' = 2^ceil(log2(max(amax|x|, 1e-4) / 448)),
    q' = e4m3(x * (1 / scale')). Returns (q', scale')."""
    rows, cols = q.shape
    sr, sc = scale.shape
    x = np.zeros((sr * B, sc * B), dtype=np.float32)
    x[:rows, :cols] = to_f32(q)
    blocks = x.reshape(sr, B, sc, B) * scale.astype(np.float32)[:, None, :, None]
    amax = np.maximum(np.abs(blocks).max(axis=(1, 3)), np.float32(1e-4)).astype(np.float32)
    s = pow2_ceil((amax / np.float32(448.0)).astype(np.float32))
    y = (blocks * (np.float32(1.0) / s)[:, None, :, None]).astype(np.float32)
    q2 = _cast(np.clip(y, -448.0, 448.0), FP8).reshape(sr * B, sc * B)[:rows, :cols]
    return np.ascontiguousarray(q2), s


def requant_of(plan, receiver):
    """the weights of `receiver` (a refit.Plan's) that the engine re-quantizes after loading: those whose
    scales a ue8m0_pack step packs (SM100), unless the plan sends UE8M0 scales already"""
    if plan.scale_fmt == "ue8m0":
        return []
    return [d[:-len("_scale_inv")] for n, d, _ in plan.finalize_steps(receiver) if n == "ue8m0_pack"]


def ue8m0_pack(scales, rows, cols):
    """SM100 (a ue8m0_pack finalize step): the storage of DeepGEMM's packed UE8M0 scales as
    tests/vllm/SM100.md describes it (not from vLLM's code): fp32 power-of-two block scales [groups?,
    ceil(rows/128), ceil(cols/128)] -> int32 [groups, ceil(ceil(cols/128)/4), align4(rows)] (MN-major): row r, column p holds the exponent bytes (bits 23..30) of block scales
    [r // 128][4p .. 4p+3], the first in the low byte; K blocks past the last and rows past `rows` 0"""
    sr, sk = -(-rows // 128), -(-cols // 128)
    u = np.ascontiguousarray(scales, np.float32).reshape(-1, sr, sk).view(np.uint32)
    assert not (u & 0x807FFFFF).any(), "positive powers of two only"
    pk, mn = -(-sk // 4), -(-rows // 4) * 4
    codes = np.zeros((u.shape[0], sr, pk * 4), np.uint32)
    codes[:, :, :sk] = u >> 23
    per_row = codes[:, np.arange(rows) // 128].reshape(u.shape[0], rows, pk, 4)
    words = (per_row << np.array([0, 8, 16, 24], np.uint32)).sum(axis=-1, dtype=np.uint32)  # [g, rows, pk]
    out = np.zeros((u.shape[0], pk, mn), np.uint32)
    out[:, :, :rows] = words.transpose(0, 2, 1)
    return out.view(np.int32)


# ------------------------------------------------------------------------------------------------
# a plan's own words (its Lua file, not the generator's output)

def lua_table(text, key):
    """the text inside `key = { ... }` (balanced braces), '' when there is none"""
    m = re.search(r"\b" + key + r"\s*=\s*\{", text)
    if not m:
        return ""
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end():i - 1]


def lua_re(pat):
    """a Lua pattern as a Python regex (the escapes plans use: %. %d %-)"""
    return re.sub(r"%(.)", lambda m: "\\" + m.group(1), pat)


def plan_options(path):
    """what a plan file (models/plans/<name>.lua) says of the trainer (hf_sources' arguments), the
    quantization (fp8, exclude as regexes) and the engine profile's options (engine_format's)"""
    lua = re.sub(r"--[^\n]*", "", open(path).read())
    tr, quant, eng = lua_table(lua, "trainer"), lua_table(lua, "quant"), lua_table(lua, "engine")
    dt = re.search(r'\bdtype\s*=\s*"(\w+)"', tr)
    engine = {"name": re.search(r'\bname\s*=\s*"([\w-]+)"', eng).group(1)}
    if re.search(r"\bmtp\s*=\s*false", eng):
        engine["mtp"] = False
    if re.search(r"\bindexer_fusion\s*=\s*false", eng):
        engine["indexer_fusion"] = False
    for k in ("w13", "expert_placement"):
        v = re.search(k + r'\s*=\s*"(\w+)"', eng)
        if v:
            engine[k] = v.group(1)
    return dict(
        trainer=dict(dtype=dt.group(1) if dt else "fp32",
                     dtype_except=[(lua_re(a), b) for a, b in re.findall(r'\{\s*"([^"]*)"\s*,\s*"(\w+)"\s*\}',
                                                                        lua_table(tr, "dtype_except"))],
                     experts="per_expert" if re.search(r'experts\s*=\s*"per_expert"', tr) else "fused",
                     mtp=re.search(r"\bmtp\s*=\s*true", tr) is not None),
        fp8=re.search(r"\bfp8\s*=\s*true", quant) is not None,
        exclude=[lua_re(x) for x in re.findall(r'"([^"]*)"', lua_table(quant, "exclude"))],
        engine=engine)


# ------------------------------------------------------------------------------------------------
# the trainer side: what transformers' modules hold

def _mtp_layers(family, cfg):
    return cfg.get("mtp_layers", 0) if family in ("glm_moe_dsa", "deepseek_v3") else 0


def hf_sources(family, cfg, *, dtype="fp32", dtype_except=(), experts="fused", mtp=False):
    """{name: (shape, dtype)} of every parameter a transformers model of this config holds: masters in
    `dtype` ('fp32' or 'bf16'; the fp32 router bias of the MLA families keeps fp32), the first of
    dtype_except ((regex, dtype), ...) matching a name overriding it; experts 'fused' (transformers
    >= 5) or 'per_expert' (4.x); the MTP layers only with mtp (transformers does not load them)."""
    H, out = cfg["hidden"], {}

    def add(name, shape, fixed=None):
        dt = next((d for pat, d in dtype_except if re.search(pat, name)), fixed or dtype)
        out[name] = (tuple(shape), dt)

    def experts_of(p, E, inter):
        if experts == "fused":
            add(p + "mlp.experts.gate_up_proj", (E, 2 * inter, H))
            add(p + "mlp.experts.down_proj", (E, H, inter))
        else:
            for e in range(E):
                x = f"{p}mlp.experts.{e}."
                add(x + "gate_proj.weight", (inter, H))
                add(x + "up_proj.weight", (inter, H))
                add(x + "down_proj.weight", (H, inter))

    add("model.embed_tokens.weight", (cfg["vocab"], H))
    if family in ("qwen3", "qwen3_moe"):
        hd = cfg["head_dim"]
        for l in range(cfg["layers"]):
            p, a = f"model.layers.{l}.", f"model.layers.{l}.self_attn."
            add(a + "q_proj.weight", (cfg["heads"] * hd, H))
            add(a + "k_proj.weight", (cfg["kv_heads"] * hd, H))
            add(a + "v_proj.weight", (cfg["kv_heads"] * hd, H))
            add(a + "o_proj.weight", (H, cfg["heads"] * hd))
            add(a + "q_norm.weight", (hd,))
            add(a + "k_norm.weight", (hd,))
            add(p + "input_layernorm.weight", (H,))
            add(p + "post_attention_layernorm.weight", (H,))
            if family == "qwen3_moe":
                add(p + "mlp.gate.weight", (cfg["experts"], H))
                experts_of(p, cfg["experts"], cfg["moe_intermediate"])
            else:
                add(p + "mlp.gate_proj.weight", (cfg["intermediate"], H))
                add(p + "mlp.up_proj.weight", (cfg["intermediate"], H))
                add(p + "mlp.down_proj.weight", (H, cfg["intermediate"]))
        add("model.norm.weight", (H,))
        if not cfg.get("tie_word_embeddings"):
            add("lm_head.weight", (cfg["vocab"], H))
        return out
    N, nope, rope, v = cfg["heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    qr, kr = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    for l in range(cfg["layers"] + (_mtp_layers(family, cfg) if mtp else 0)):
        p, a = f"model.layers.{l}.", f"model.layers.{l}.self_attn."
        add(a + "q_a_proj.weight", (qr, H))
        add(a + "q_a_layernorm.weight", (qr,))
        add(a + "q_b_proj.weight", (N * (nope + rope), qr))
        add(a + "kv_a_proj_with_mqa.weight", (kr + rope, H))
        add(a + "kv_a_layernorm.weight", (kr,))
        add(a + "kv_b_proj.weight", (N * (nope + v), kr))
        add(a + "o_proj.weight", (H, N * v))
        if family == "glm_moe_dsa":
            ih, idim = cfg["index_heads"], cfg["index_head_dim"]
            add(a + "indexer.wq_b.weight", (ih * idim, qr))
            add(a + "indexer.wk.weight", (idim, H))
            add(a + "indexer.k_norm.weight", (idim,))
            add(a + "indexer.k_norm.bias", (idim,))
            add(a + "indexer.weights_proj.weight", (ih, H))
        add(p + "input_layernorm.weight", (H,))
        add(p + "post_attention_layernorm.weight", (H,))
        if l < cfg["first_dense"]:
            add(p + "mlp.gate_proj.weight", (cfg["intermediate"], H))
            add(p + "mlp.up_proj.weight", (cfg["intermediate"], H))
            add(p + "mlp.down_proj.weight", (H, cfg["intermediate"]))
        else:
            I, S = cfg["moe_intermediate"], cfg["moe_intermediate"] * cfg["shared_experts"]
            add(p + "mlp.gate.weight", (cfg["experts"], H))
            add(p + "mlp.gate.e_score_correction_bias", (cfg["experts"],), "fp32")
            experts_of(p, cfg["experts"], I)
            add(p + "mlp.shared_experts.gate_proj.weight", (S, H))
            add(p + "mlp.shared_experts.up_proj.weight", (S, H))
            add(p + "mlp.shared_experts.down_proj.weight", (H, S))
        if l >= cfg["layers"]:
            add(p + "eh_proj.weight", (H, 2 * H))
            for n in ("enorm.weight", "hnorm.weight", "shared_head.norm.weight"):
                add(p + n, (H,))
            if family == "deepseek_v3":  # DeepSeek-V3's MTP layer carries its own embedding and head
                add(p + "embed_tokens.weight", (cfg["vocab"], H))
                add(p + "shared_head.head.weight", (cfg["vocab"], H))
    add("model.norm.weight", (H,))
    add("lm_head.weight", (cfg["vocab"], H))
    return out


def checkpoint_view(sd):
    """sd with fused experts as the per-expert checkpoint tensors they hold (views, not copies):
    mlp.experts.gate_up_proj [E, 2I, H] -> mlp.experts.{e}.gate_proj.weight = [e, :I], up_proj = [e, I:];
    mlp.experts.down_proj [E, H, I] -> mlp.experts.{e}.down_proj.weight"""
    out = {}
    for n, a in sd.items():
        m = re.fullmatch(r"(.*\.mlp\.experts)\.(gate_up_proj|down_proj)", n)
        if not m:
            out[n] = a
            continue
        assert a.ndim == 3, f"{n}: fused experts are 3-D, got {a.shape}"
        for e in range(a.shape[0]):
            if m.group(2) == "gate_up_proj":
                i = a.shape[1] // 2
                out[f"{m.group(1)}.{e}.gate_proj.weight"] = a[e, :i]
                out[f"{m.group(1)}.{e}.up_proj.weight"] = a[e, i:]
            else:
                out[f"{m.group(1)}.{e}.down_proj.weight"] = a[e]
    return out


# ------------------------------------------------------------------------------------------------
# the engine side: what vLLM 0.33 holds on one GPU, or SGLang 0.5.23 (engine name "sglang": routed
# experts under mlp.experts, no name registered twice, DeepSeek's fused_qkv_a_proj_with_mqa, a bf16
# router, the DSA indexer's tensors apart; MLA's w_kc / w_vc are SGLang's own copies, not refit's)

class EngineRank(dict):
    """{name: array} of one engine GPU; aliases share the array object. pad_rows: {name: trailing rows
    of dim 0 that hold no weight}; derived: {view name: ('storage', first view) for a storage vLLM
    allocates, ('dst', name) for a view of a destination tensor}."""

    def __init__(self):
        super().__init__()
        self.pad_rows, self.derived, self.aliases = {}, {}, {}

    def names(self):
        """primary names (those aliases point to), derived views excluded"""
        return [n for n in self if n not in self.derived and not any(n in a for a in self.aliases.values())]


class _Model:
    """The destination tensors of one engine GPU, built part by part."""

    def __init__(self, sd, fp8, ue8m0, exclude, requant=()):
        self.sd, self.fp8, self.ue8m0, self.exclude = checkpoint_view(sd), fp8, ue8m0, exclude
        self.requant = set(requant)
        self.out, self._q = EngineRank(), {}

    def src(self, name):
        x = self.sd[name]
        return x.reshape(x.shape[0], -1) if x.ndim == 1 else x

    def quant(self, name, requant=False):
        """(q, scale) of source `name`; requant: then re-quantized as vLLM does on SM100 (requant_ue8m0)"""
        if (name, requant) not in self._q:
            qs = quantize(self.src(name), self.ue8m0)
            self._q[(name, requant)] = requant_ue8m0(*qs) if requant else qs
        return self._q[(name, requant)]

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

    def weight(self, dst, parts, quantized=True):
        """A weight fused from parts (source, (r0, r1), (c0, c1)) along dim 0: bf16, or (q, scale)
        from each source quantized whole then cut in whole blocks."""
        if not (self.fp8 and quantized) or any(re.search(p, dst) for p in self.exclude):
            return np.concatenate([self.cast(n, BF16, r, c).reshape(r[1] - r[0], -1) for n, r, c in parts]), None
        qs, ss = [], []
        for n, (r0, r1), (c0, c1) in parts:
            q, s = self.quant(n, dst in self.requant)  # whole blocks: the same as re-quantizing the fused tensor
            rows, cols = q.shape
            for a, b, total in ((r0, r1, rows), (c0, c1, cols)):
                assert a % B == 0 and (b % B == 0 or b == total), f"{n}: a TP/EP cut at {a}..{b} splits an FP8 block"
            qs.append(q[r0:r1, c0:c1])
            ss.append(s[r0 // B:-(-r1 // B), c0 // B:-(-c1 // B)])
        return np.concatenate(qs), np.concatenate(ss)

    def put(self, name, w, scale=None, aliases=()):
        w = np.ascontiguousarray(w)
        self.out[name] = w
        for a in aliases:
            self.out[a] = w
        if aliases:
            self.out.aliases[name] = list(aliases)
        if scale is not None:
            self.put(name + "_scale_inv", scale, aliases=[a + "_scale_inv" for a in aliases])
        return w

    def weight_put(self, name, parts, aliases=(), quantized=True):
        return self.put(name, *self.weight(name, parts, quantized), aliases=aliases)

    def norm(self, name, src, dtype=BF16, aliases=()):
        self.put(name, self.cast(src, dtype), aliases=aliases)

    def full(self, name):
        x = self.src(name)
        return (0, x.shape[0]), (0, x.shape[1])

    def vocab(self, name, src, r, tp, aliases=()):
        """VocabParallelEmbedding / ParallelLMHead rows of TP rank r: the vocabulary padded to a multiple
        of 64, split evenly; rows past the vocabulary are padding (never written)."""
        x = self.src(src)
        per = -(-x.shape[0] // VOCAB_PAD) * VOCAB_PAD // tp
        a, b = min(r * per, x.shape[0]), min((r + 1) * per, x.shape[0])
        w = np.zeros((per, x.shape[1]), BF16)
        w[:b - a] = self.cast(src, BF16, (a, b))
        self.put(name, w, aliases=aliases)
        if per - (b - a):
            self.out.pad_rows[name] = per - (b - a)


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


def _experts(m, src, dst, E, tp, ep, q, engine):
    """FusedMoE w13 [E_local, 2I, H] = per expert [gate; up] (engine w13 'up_gate': [up; gate]),
    w2 [E_local, H, I]. EP: vLLM's linear placement (E // ep each, the remainder to the first ranks) or
    round_robin (experts q, q + ep, ...), no TP split; else every expert, TP split."""
    if ep > 1:
        if engine.get("expert_placement") == "round_robin":
            held, r, split = list(range(q, E, ep)), 0, 1
        else:
            base, rem = E // ep, E % ep
            first = q * base + min(q, rem)
            held, r, split = list(range(first, first + base + (q < rem))), 0, 1
    else:
        held, r, split = list(range(E)), q % tp, tp
    halves = ("up_proj", "gate_proj") if engine.get("w13") == "up_gate" else ("gate_proj", "up_proj")
    e13, e2 = [], []
    for e in held:
        x = f"{src}mlp.experts.{e}."
        e13.append(m.weight(dst + "w13_weight", [_col(m, x + h + ".weight", r, split) for h in halves]))
        e2.append(m.weight(dst + "w2_weight", [_row(m, x + "down_proj.weight", r, split)]))
    for name, items in (("w13_weight", e13), ("w2_weight", e2)):
        m.put(dst + name, np.stack([w for w, _ in items]), None if items[0][1] is None else np.stack([s for _, s in items]))


def _qwen3(m, c, tp, ep, q, moe, engine):
    r = q % tp
    m.vocab("model.embed_tokens.weight", "model.embed_tokens.weight", r, tp,
            aliases=["lm_head.weight"] if c.get("tie_word_embeddings") else ())
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        a = p + "self_attn."
        m.weight_put(a + "qkv_proj.weight", [
            _col(m, a + "q_proj.weight", r, tp, c["heads"]),
            _col(m, a + "k_proj.weight", r, tp, c["kv_heads"], replicate=True),
            _col(m, a + "v_proj.weight", r, tp, c["kv_heads"], replicate=True)])
        m.weight_put(a + "o_proj.weight", [_row(m, a + "o_proj.weight", r, tp)])
        for n in (a + "q_norm.weight", a + "k_norm.weight", p + "input_layernorm.weight",
                  p + "post_attention_layernorm.weight"):
            m.norm(n, n)
        if moe and engine.get("name") == "sglang":  # a bf16 router, the experts under mlp.experts
            m.norm(p + "mlp.gate.weight", p + "mlp.gate.weight")
            _experts(m, p, p + "mlp.experts.", c["experts"], tp, ep, q, engine)
        elif moe:  # the router: a replicated linear built with the quant config, registered again in mlp.experts
            m.weight_put(p + "mlp.gate.weight", [_rep(m, p + "mlp.gate.weight")], aliases=[p + "mlp.experts.gate.weight"])
            _experts(m, p, p + "mlp.experts.routed_experts.", c["experts"], tp, ep, q, engine)
        else:
            m.weight_put(p + "mlp.gate_up_proj.weight", [_col(m, p + "mlp.gate_proj.weight", r, tp),
                                                         _col(m, p + "mlp.up_proj.weight", r, tp)])
            m.weight_put(p + "mlp.down_proj.weight", [_row(m, p + "mlp.down_proj.weight", r, tp)])
    m.norm("model.norm.weight", "model.norm.weight")
    if not c.get("tie_word_embeddings"):
        m.vocab("lm_head.weight", "lm_head.weight", r, tp)


def _mla_views(m, name_uk, name_uv, kv_b, scale, heads, nope, v, lora, kv_b_name):
    """vLLM's MLA absorption: W = kv_b (dequantized to bf16 for FP8: bf16_rne(f32(q) * scale), as an
    identity GEMM yields it, i.e. a new contiguous [lora, h*(nope+v)] storage holding W^T), then
    W^T viewed [lora, h, nope+v], split at nope: W_UK_T = W_UK.permute(1, 2, 0) [h, nope, lora],
    W_UV = W_UV.transpose(0, 1) [h, lora, v], both views (never copies)."""
    if scale is not None:
        s = np.repeat(np.repeat(scale, B, axis=0), B, axis=1)[:kv_b.shape[0], :kv_b.shape[1]]
        wt = np.ascontiguousarray(_cast((to_f32(kv_b) * s).astype(np.float32), BF16).T)  # the new storage
        owner = ("storage", name_uk)
    else:
        wt = kv_b.T  # kv_b_proj's own memory
        owner = ("dst", kv_b_name)
    w = wt.reshape(lora, heads, nope + v)
    assert np.shares_memory(w, wt), "a view, not a copy"
    m.out[name_uk] = w[:, :, :nope].transpose(1, 2, 0)
    m.out[name_uv] = w[:, :, nope:].transpose(1, 0, 2)
    m.out.derived[name_uk] = m.out.derived[name_uv] = owner


def _mla(m, c, tp, ep, q, family, engine):
    r, N = q % tp, c["heads"]
    nope, v, lora = c["qk_nope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    dsv3, layers, M = family == "deepseek_v3", c["layers"], _mtp_layers(family, c)
    drafter = M > 0 and engine.get("mtp") is not False  # vLLM builds the MTP drafter
    sgl = engine.get("name") == "sglang"
    assert not (sgl and drafter), "the sglang profile covers no drafter"
    m.vocab("model.embed_tokens.weight", "model.embed_tokens.weight", r, tp,
            aliases=["drafter.model.embed_tokens.weight"] if drafter else ())
    for l in range(layers + M):
        p, mtp = f"model.layers.{l}.", l >= layers
        if mtp and not (drafter and p + "eh_proj.weight" in m.sd):  # the trainer has no MTP layer
            continue
        a = p + "self_attn."
        dh = f"drafter.model.layers.{l}."
        dp = dh + "mtp_block." if mtp else p  # the drafter holds the MTP layer's decoder block under mtp_block
        da = dp + "self_attn."

        def al(n):  # vLLM's DeepseekV2 attention registers its tensors again under mla_attn
            if not dsv3 or sgl:
                return ()
            return [da + "mla_attn." + n] + ([da + "mla_attn.mla_attn." + n] if n == "kv_b_proj.weight" else [])

        m.weight_put(da + ("fused_qkv_a_proj_with_mqa.weight" if sgl else "fused_qkv_a_proj.weight"), [_rep(m, a + "q_a_proj.weight"),
                                                      _rep(m, a + "kv_a_proj_with_mqa.weight")],
                     aliases=al("fused_qkv_a_proj.weight"))
        m.norm(da + "q_a_layernorm.weight", a + "q_a_layernorm.weight", aliases=al("q_a_layernorm.weight"))
        m.weight_put(da + "q_b_proj.weight", [_col(m, a + "q_b_proj.weight", r, tp, N)], aliases=al("q_b_proj.weight"))
        m.norm(da + "kv_a_layernorm.weight", a + "kv_a_layernorm.weight", aliases=al("kv_a_layernorm.weight"))
        kv_b, kv_s = m.weight(da + "kv_b_proj.weight", [_col(m, a + "kv_b_proj.weight", r, tp, N)])
        kv_b = m.put(da + "kv_b_proj.weight", kv_b, kv_s, aliases=al("kv_b_proj.weight"))
        x = da + "mla_attn.mla_attn." if dsv3 else da
        if not sgl:
            _mla_views(m, x + "W_UK_T", x + "W_UV", kv_b, kv_s, N // tp, nope, v, lora, da + "kv_b_proj.weight")
        m.weight_put(da + "o_proj.weight", [_row(m, a + "o_proj.weight", r, tp)], aliases=al("o_proj.weight"))
        if family == "glm_moe_dsa":
            x, dx = a + "indexer.", da + "indexer."
            m.weight_put(dx + "wq_b.weight", [_rep(m, x + "wq_b.weight")])
            if engine.get("indexer_fusion") is False or sgl:
                m.weight_put(dx + "wk.weight", [_rep(m, x + "wk.weight")])
                m.norm(dx + "weights_proj.weight", x + "weights_proj.weight")
            else:  # vLLM >= 0.33: [wk; weights_proj], one bf16 tensor
                m.put(dx + "wk_weights_proj.weight", np.concatenate([m.cast(x + "wk.weight", BF16),
                                                                     m.cast(x + "weights_proj.weight", BF16)]))
            m.norm(dx + "k_norm.weight", x + "k_norm.weight", np.float32)  # a LayerNorm kept in fp32
            m.norm(dx + "k_norm.bias", x + "k_norm.bias", np.float32)
        for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            m.norm(dp + n, p + n)
        if l < c["first_dense"]:
            m.weight_put(dp + "mlp.gate_up_proj.weight", [_col(m, p + "mlp.gate_proj.weight", r, tp),
                                                          _col(m, p + "mlp.up_proj.weight", r, tp)])
            m.weight_put(dp + "mlp.down_proj.weight", [_row(m, p + "mlp.down_proj.weight", r, tp)])
        else:  # vLLM 0.33's MoE layer registers the router and the shared experts again inside mlp.experts
            def again(*names):
                return () if sgl else list(names)
            m.norm(dp + "mlp.gate.weight", p + "mlp.gate.weight", aliases=again(dp + "mlp.experts.gate.weight"))
            m.norm(dp + "mlp.gate.e_score_correction_bias", p + "mlp.gate.e_score_correction_bias", np.float32,
                   aliases=again(dp + "mlp.experts.gate.e_score_correction_bias",
                                 dp + "mlp.experts.routed_experts.e_score_correction_bias"))
            _experts(m, p, dp + ("mlp.experts." if sgl else "mlp.experts.routed_experts."), c["experts"], tp, ep, q,
                     engine)
            s, ds = p + "mlp.shared_experts.", dp + "mlp.shared_experts."
            m.weight_put(ds + "gate_up_proj.weight", [_col(m, s + "gate_proj.weight", r, tp),
                                                      _col(m, s + "up_proj.weight", r, tp)],
                         aliases=again(dp + "mlp.experts._shared_experts._layer.gate_up_proj.weight"))
            m.weight_put(ds + "down_proj.weight", [_row(m, s + "down_proj.weight", r, tp)],
                         aliases=again(dp + "mlp.experts._shared_experts._layer.down_proj.weight"))
        if mtp:
            m.put(dh + "eh_proj.weight", m.cast(p + "eh_proj.weight", BF16))
            for n in ("enorm.weight", "hnorm.weight", "shared_head.norm.weight"):
                m.norm(dh + n, p + n)
    m.norm("model.norm.weight", "model.norm.weight")
    heads = [f"drafter.model.layers.{l}.shared_head.head.weight" for l in range(layers, layers + M)] + \
        ["drafter.lm_head.weight"] if drafter else []  # the drafter's heads are the target's lm_head
    m.vocab("lm_head.weight", "lm_head.weight", r, tp, aliases=heads)


def engine_format(family, cfg, sd, *, tp, ep, position, fp8, ue8m0=False, engine=None, exclude=(), requant=()):
    """EngineRank of engine GPU `position` (see the module docstring). engine: the profile's name
    (vllm, sglang) and options (mtp, w13, indexer_fusion, expert_placement); exclude: regexes of destination names kept
    bf16 in an FP8 plan; requant: names of FP8 weights the engine re-quantizes to power-of-two scales after
    loading (vLLM on SM100, requant_ue8m0)."""
    m = _Model(sd, fp8, ue8m0, exclude, requant)
    engine = engine or {}
    if family in ("qwen3", "qwen3_moe"):
        _qwen3(m, cfg, tp, ep, position, family == "qwen3_moe", engine)
    elif family in ("glm_moe_dsa", "deepseek_v3"):
        _mla(m, cfg, tp, ep, position, family, engine)
    else:
        raise ValueError(f"engine_ref: no family '{family}'")
    return m.out
