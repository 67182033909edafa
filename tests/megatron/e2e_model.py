"""e2e_model.py: real Megatron-core models for the end-to-end test (tests/megatron/e2e.py), on the CPU.

    patch_cpu()                          megatron-core 0.16.1 on a host without CUDA (see below)
    build(cfg, family, tp, pp, ep, etp=None, vocab=None, mtp=False, dtype="fp32") -> GPTModel of this rank
    coords() -> {tp, pp, ep, etp, dp and their sizes} from megatron.core.parallel_state
    fill(model, version, coords, base=None, vocab=None)  every parameter and buffer set from (version, name, shard)
    local_shards(model, coords) -> this rank's tensors with their tensor-parallel attributes
    to_hf(shards, family, cfg) -> {HF name: tensor}   an independent Megatron -> HF conversion
    bridge_export(model, hf_dir) -> {HF name: tensor} through Megatron-Bridge (dense only here)

The model is built from a refit model file's fields (models/<name>.lua: family qwen3, qwen3_moe,
deepseek_v3) with the local (non-Transformer-Engine) layer specs: SequentialMLP experts
(experts.local_experts.<j>, j local), separate layer norms, and the allgather token dispatcher.
"""
import os
import re
import sys
import types
import zlib

import torch
import torch.nn.functional as F


def patch_cpu():
    """What megatron-core 0.16.1 needs to construct MLA and expert-bias models without a CUDA
    driver (construction only; no forward runs here):
    - MultiLatentAttention builds its RotaryEmbedding and TopKRouter its expert_bias buffer on
      torch.cuda.current_device(): the CPU instead;
    - LanguageModule.setup_embeddings_and_output_layer moves the embedding copy of the last PP stage
      (MTP, tied embeddings) with Tensor.cuda(): left where it is;
    - multi_latent_attention.HAVE_TE is True without Transformer Engine (its extensions module
      imports, with placeholder classes), which breaks an isinstance check: False."""
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.Tensor.cuda = lambda self, *a, **k: self
    import megatron.core.transformer.multi_latent_attention as mla
    if not isinstance(mla.TELinear, type):
        mla.HAVE_TE = False


def _local_core_attention():
    """The local DotProductAttention takes no k_channels / v_channels, which MLASelfAttention passes
    (Transformer Engine's attention takes them). It holds no parameters: one that drops them builds
    the same parameter names and shapes."""
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    class MLADotProductAttention(DotProductAttention):
        def __init__(self, *a, k_channels=None, v_channels=None, **k):
            super().__init__(*a, **k)

    return MLADotProductAttention


def megatron_config(family, cfg, tp, pp, ep, etp=None, mtp=False, dtype="fp32"):
    from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    common = dict(
        num_layers=cfg["layers"], hidden_size=cfg["hidden"], num_attention_heads=cfg["heads"],
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, expert_model_parallel_size=ep,
        expert_tensor_parallel_size=etp, use_cpu_initialization=True, params_dtype=dt, bf16=dtype == "bf16",
        pipeline_dtype=dt, normalization="RMSNorm", layernorm_epsilon=1e-6, gated_linear_unit=True,
        activation_func=F.silu, add_bias_linear=False, add_qkv_bias=False, hidden_dropout=0.0,
        attention_dropout=0.0, bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False, qk_layernorm=True)
    if family in ("qwen3", "qwen3_moe"):
        extra = dict(kv_channels=cfg["head_dim"], num_query_groups=cfg["kv_heads"],
                     ffn_hidden_size=cfg.get("intermediate", cfg.get("moe_intermediate")))
        if family == "qwen3_moe":
            extra.update(num_moe_experts=cfg["experts"], moe_router_topk=cfg["experts_per_token"],
                         moe_ffn_hidden_size=cfg["moe_intermediate"], moe_token_dispatcher_type="allgather",
                         moe_router_load_balancing_type="aux_loss", moe_aux_loss_coeff=1e-3)
        return TransformerConfig(**common, **extra)
    if family == "deepseek_v3":
        L, dense = cfg["layers"], cfg["first_dense"]
        return MLATransformerConfig(
            **common, multi_latent_attention=True, ffn_hidden_size=cfg["intermediate"],
            q_lora_rank=cfg["q_lora_rank"], kv_lora_rank=cfg["kv_lora_rank"], qk_head_dim=cfg["qk_nope_head_dim"],
            qk_pos_emb_head_dim=cfg["qk_rope_head_dim"], v_head_dim=cfg["v_head_dim"], rope_type="rope",
            num_moe_experts=cfg["experts"], moe_router_topk=cfg["experts_per_token"],
            moe_ffn_hidden_size=cfg["moe_intermediate"], moe_token_dispatcher_type="allgather",
            moe_router_load_balancing_type="aux_loss", moe_aux_loss_coeff=1e-3,
            moe_shared_expert_intermediate_size=cfg["moe_intermediate"] * cfg["shared_experts"],
            moe_router_score_function="sigmoid", moe_router_enable_expert_bias=True, moe_router_bias_update_rate=1e-3,
            moe_layer_freq=[0] * dense + [1] * (L - dense), mtp_num_layers=cfg["mtp_layers"] if mtp else None)
    raise ValueError(f"e2e_model: no Megatron build for family '{family}'")


def build(cfg, family, tp, pp, ep, etp=None, vocab=None, mtp=False, dtype="fp32"):
    """This rank's GPTModel (parallel_state initialised by the caller); vocab: Megatron's (padded)
    vocabulary size, the model's when None."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import (get_gpt_decoder_block_spec, get_gpt_layer_local_spec,
                                                          get_gpt_mtp_block_spec)

    config = megatron_config(family, cfg, tp, pp, ep, etp, mtp, dtype)
    mtp_spec = None
    if family == "deepseek_v3":
        spec = get_gpt_decoder_block_spec(config, use_transformer_engine=False, normalization="RMSNorm")
        attn = _local_core_attention()
        for ls in spec.layer_specs:
            ls.submodules.self_attention.submodules.core_attention = attn
        # None on a pipeline stage without the MTP block (all but the last)
        mtp_spec = get_gpt_mtp_block_spec(config, spec, use_transformer_engine=False) if mtp else None
        if mtp_spec is not None:
            for ls in mtp_spec.layer_specs:
                ls.submodules.transformer_layer.submodules.self_attention.submodules.core_attention = attn
    else:
        spec = get_gpt_layer_local_spec(num_experts=cfg.get("experts") if family == "qwen3_moe" else None,
                                        moe_grouped_gemm=False, qk_layernorm=True, normalization="RMSNorm")
    stage = ps.get_pipeline_model_parallel_rank()
    torch.manual_seed(1234)
    return GPTModel(config=config, transformer_layer_spec=spec, vocab_size=vocab or cfg["vocab"],
                    max_sequence_length=64, pre_process=stage == 0, post_process=stage == pp - 1,
                    share_embeddings_and_output_weights=bool(cfg.get("tie_word_embeddings")),
                    position_embedding_type="rope", mtp_block_spec=mtp_spec)


def coords():
    from megatron.core import parallel_state as ps
    return dict(rank=torch.distributed.get_rank(), tp=ps.get_tensor_model_parallel_rank(),
                pp=ps.get_pipeline_model_parallel_rank(), ep=ps.get_expert_model_parallel_rank(),
                etp=ps.get_expert_tensor_parallel_rank(), dp=ps.get_data_parallel_rank(),
                tp_size=ps.get_tensor_model_parallel_world_size(), pp_size=ps.get_pipeline_model_parallel_world_size(),
                ep_size=ps.get_expert_model_parallel_world_size(),
                etp_size=ps.get_expert_tensor_parallel_world_size())


def named_tensors(model):
    """parameters and buffers by the names the model registers (the non-persistent router token
    counters are not weights)"""
    out = dict(model.named_parameters())
    out.update((n, b) for n, b in model.named_buffers() if not n.endswith("local_tokens_per_expert"))
    return out


def _shard_key(name, t, c):
    """what makes this rank's copy of `name` its own: the pipeline stage, and the TP rank (a
    TP-split tensor) or the EP and expert-TP ranks (an expert); data-parallel copies are equal"""
    key = f"{name}|pp{c['pp']}"
    if ".experts.local_experts." in name:
        key += f"|ep{c['ep']}|etp{c['etp']}"
    elif getattr(t, "tensor_model_parallel", False):
        key += f"|tp{c['tp']}"
    return key


def fill(model, version, c, base=None, vocab=None):
    """Every weight of this rank set from (version, its shard key); base: version `base`'s values
    with 1% of each tensor's values shrunk by 1-3% per later version up to `version` (what a delta
    push sees). Rows of the word embedding / output layer past `vocab` (Megatron's padding) get 1e4,
    which no reference holds: a padding row that travels shows."""
    with torch.no_grad():
        for n, t in named_tensors(model).items():
            key = _shard_key(n, t, c)
            g = torch.Generator().manual_seed(zlib.crc32(f"{base or version}|{key}".encode()))
            x = torch.rand(t.shape, generator=g, dtype=torch.float32) * 2 - 1
            flat = x.view(-1)
            for u in range((base or version) + 1, version + 1):
                g = torch.Generator().manual_seed(zlib.crc32(f"{u}|{key}|delta".encode()))
                idx = torch.randperm(flat.numel(), generator=g)[:max(1, flat.numel() // 100)]
                flat[idx] *= 0.97 + 0.02 * torch.rand(idx.numel(), generator=g)
            if vocab and n in ("embedding.word_embeddings.weight", "output_layer.weight"):
                first = c["tp"] * t.shape[0]
                if first + t.shape[0] > vocab:
                    x[max(0, vocab - first):] = 1e4
            t.copy_(x.to(t.dtype))


def local_shards(model, c):
    """(coords, {name: (tensor clone, tensor_model_parallel, partition_dim, partition_stride)})"""
    out = {}
    for n, t in named_tensors(model).items():
        out[n] = (t.detach().clone(), bool(getattr(t, "tensor_model_parallel", False)),
                  getattr(t, "partition_dim", -1), getattr(t, "partition_stride", 1))
    return c, out


# ------------------------------------------------------------------------------------------------
# an independent Megatron -> HF conversion (the layouts of ../shared/megatron/README.md section 3,
# written from megatron-core's sources: per-group interleaved QKV, [gate; up] per TP shard, experts
# numbered ep_rank * E/EP + local, layer numbers local to the pipeline stage)

def _merge(parts, name):
    """one tensor from its pieces by TP rank: equal copies (replicated), or concatenated along the
    partition dim; stride 2 ([gate_r; up_r] per rank): the halves of each piece apart"""
    t0, split, dim, stride = parts[0]
    if not split:
        for p in parts[1:]:
            assert torch.equal(p[0], t0), f"{name}: replicated copies differ between TP ranks"
        return t0
    if stride == 1:
        return torch.cat([p[0] for p in parts], dim)
    assert stride == 2 and dim == 0, (name, dim, stride)
    halves = [p[0].chunk(2, 0) for p in parts]
    return torch.cat([h[0] for h in halves] + [h[1] for h in halves], 0)


def to_hf(shards, family, cfg):
    """{HF name: tensor} of the whole model from every rank's local_shards (a list)"""
    L, E = cfg["layers"], cfg.get("experts", 0)
    pieces = {}  # (global name with layer numbers global, expert ids global) -> {shard rank: piece}
    for c, named in shards:
        per = L // c["pp_size"]
        for n, piece in named.items():
            m = re.match(r"decoder\.layers\.(\d+)\.(.*)", n)
            if m:
                n = f"layers.{c['pp'] * per + int(m.group(1))}.{m.group(2)}"
            m = re.match(r"mtp\.layers\.(\d+)\.(.*)", n)
            if m:
                n = f"layers.{L + int(m.group(1))}.mtp.{m.group(2)}"
            elif n == "embedding.word_embeddings.weight" and c["pp"] != 0:
                continue  # the last stage's copy for MTP / tied embeddings
            m = re.match(r"(.*)\.experts\.local_experts\.(\d+)\.(.*)", n)
            if m:
                n = f"{m.group(1)}.experts.{c['ep'] * (E // c['ep_size']) + int(m.group(2))}.{m.group(3)}"
                pieces.setdefault(n, {})[c["etp"]] = piece
            else:
                pieces.setdefault(n, {})[c["tp"]] = piece
    full = {n: _merge([p[r] for r in sorted(p)], n) for n, p in pieces.items()}
    out = {}
    for n, t in full.items():
        if n == "embedding.word_embeddings.weight":
            out["model.embed_tokens.weight"] = t[:cfg["vocab"]]
        elif n == "output_layer.weight":
            out["lm_head.weight"] = t[:cfg["vocab"]]
        elif n == "decoder.final_layernorm.weight":
            out["model.norm.weight"] = t
        else:
            m = re.fullmatch(r"layers\.(\d+)\.(mtp\.)?(.*)", n)
            assert m, f"to_hf: unexpected Megatron name '{n}'"
            out.update(_layer(f"model.layers.{m.group(1)}.", m.group(3), t, family, cfg, bool(m.group(2))))
    if cfg.get("tie_word_embeddings"):
        out.pop("lm_head.weight", None)
    for l in range(L, L + (cfg.get("mtp_layers", 0) if any(".eh_proj." in n for n in out) else 0)):
        out[f"model.layers.{l}.embed_tokens.weight"] = out["model.embed_tokens.weight"]
        out[f"model.layers.{l}.shared_head.head.weight"] = out["lm_head.weight"]
    return out


def _layer(p, n, t, family, cfg, mtp):
    a = p + "self_attn."
    if mtp:
        if n in ("enorm.weight", "hnorm.weight", "eh_proj.weight"):
            return {p + n: t}
        if n == "final_layernorm.weight":
            return {p + "shared_head.norm.weight": t}
        assert n.startswith("transformer_layer."), n
        n = n[len("transformer_layer."):]
    simple = {"input_layernorm.weight": p + "input_layernorm.weight",
              "pre_mlp_layernorm.weight": p + "post_attention_layernorm.weight",
              "self_attention.linear_proj.weight": a + "o_proj.weight",
              "self_attention.q_layernorm.weight": a + ("q_norm.weight" if family != "deepseek_v3"
                                                        else "q_a_layernorm.weight"),
              "self_attention.k_layernorm.weight": a + "k_norm.weight",
              "self_attention.kv_layernorm.weight": a + "kv_a_layernorm.weight",
              "self_attention.linear_q_down_proj.weight": a + "q_a_proj.weight",
              "self_attention.linear_q_up_proj.weight": a + "q_b_proj.weight",
              "self_attention.linear_kv_down_proj.weight": a + "kv_a_proj_with_mqa.weight",
              "self_attention.linear_kv_up_proj.weight": a + "kv_b_proj.weight",
              "mlp.router.weight": p + "mlp.gate.weight",
              "mlp.router.expert_bias": p + "mlp.gate.e_score_correction_bias"}
    if n in simple:
        return {simple[n]: t}
    if n == "self_attention.linear_qkv.weight":
        G, Q, d = cfg["kv_heads"], cfg["heads"], cfg["head_dim"]
        g = t.reshape(G, (Q // G + 2) * d, -1)
        q, k, v = g.split([Q // G * d, d, d], 1)
        return {a + "q_proj.weight": q.reshape(Q * d, -1), a + "k_proj.weight": k.reshape(G * d, -1),
                a + "v_proj.weight": v.reshape(G * d, -1)}
    m = re.fullmatch(r"mlp\.(experts\.\d+\.|shared_experts\.|)linear_fc([12])\.weight", n)
    assert m, f"to_hf: unexpected Megatron name '{n}' in {p}"
    if m.group(2) == "2":
        return {f"{p}mlp.{m.group(1)}down_proj.weight": t}
    gate, up = t.chunk(2, 0)
    return {f"{p}mlp.{m.group(1)}gate_proj.weight": gate, f"{p}mlp.{m.group(1)}up_proj.weight": up}


# ------------------------------------------------------------------------------------------------
# Megatron-Bridge (0.3.1 imports Transformer Engine unconditionally in its LoRA modules)

def _te_placeholder():
    """Import hooks that make `transformer_engine` and its submodules importable as placeholders
    (any attribute a class, whose attributes are classes again; constructing one raises), for
    Megatron-Bridge's module-level TE references. megatron.core's own TE detection must have run
    first (it imports its layer specs before this), so megatron.core keeps its local layers."""
    import importlib.abc
    import importlib.machinery

    class Placeholder(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder(name, (), {"__init__": _refuse})

    def _refuse(self, *a, **k):
        raise RuntimeError("transformer_engine is a placeholder in this test (not installed)")

    def module_attr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder(name, (), {"__init__": _refuse})

    class Hook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname.split(".")[0] == "transformer_engine":
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            m = types.ModuleType(spec.name)
            m.__path__, m.__getattr__, m.__version__ = [], module_attr, "0+placeholder"
            return m

        def exec_module(self, module):
            pass

    if not any(type(f).__name__ == "Hook" and getattr(f, "refit", False) for f in sys.meta_path):
        h = Hook()
        h.refit = True
        sys.meta_path.insert(0, h)


def write_hf_checkpoint(family, cfg, path):
    """a tiny HF checkpoint of the model's config (random weights: Megatron-Bridge reads only its
    config and tensor names)"""
    if os.path.exists(os.path.join(path, "config.json")):
        return
    from transformers import Qwen3Config, Qwen3ForCausalLM
    assert family == "qwen3", family
    hc = Qwen3Config(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], intermediate_size=cfg["intermediate"],
                     num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
                     num_key_value_heads=cfg["kv_heads"], head_dim=cfg["head_dim"], rms_norm_eps=1e-6,
                     tie_word_embeddings=bool(cfg.get("tie_word_embeddings")), max_position_embeddings=64)
    torch.manual_seed(0)
    Qwen3ForCausalLM(hc).save_pretrained(path)


def bridge_export(model, hf_dir):
    """{HF name: tensor} of the whole model exported by Megatron-Bridge (a collective: every rank)"""
    import megatron.core.models.gpt.gpt_layer_specs  # noqa: F401  megatron.core decides it has no TE first
    _te_placeholder()
    from megatron.bridge import AutoBridge
    bridge = AutoBridge.from_hf_pretrained(hf_dir, torch_dtype=torch.float32)
    return {n: w.detach().clone() for n, w in bridge.export_hf_weights([model], cpu=True, show_progress=False)}
