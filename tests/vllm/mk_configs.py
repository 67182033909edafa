import json, os, sys
HERE = os.path.dirname(os.path.abspath(__file__))
FP8 = {"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}
base_qwen3 = dict(
    architectures=["Qwen3ForCausalLM"], model_type="qwen3",
    hidden_size=256, intermediate_size=512, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=64,
    vocab_size=1024, max_position_embeddings=2048, rms_norm_eps=1e-6,
    rope_theta=1000000.0, hidden_act="silu", tie_word_embeddings=False,
    torch_dtype="bfloat16", attention_bias=False, bos_token_id=1, eos_token_id=2,
)
base_qwen3moe = dict(base_qwen3, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
    num_experts=4, num_experts_per_tok=2, moe_intermediate_size=256, decoder_sparse_step=1,
    norm_topk_prob=True, mlp_only_layers=[], output_router_logits=False, router_aux_loss_coef=0.001)
base_dsv3 = dict(
    architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3",
    hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
    num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
    n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
    routed_scaling_factor=2.5, scoring_func="sigmoid", topk_method="noaux_tc", norm_topk_prob=True,
    q_lora_rank=256, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    vocab_size=1024, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
    hidden_act="silu", tie_word_embeddings=False, torch_dtype="bfloat16",
    num_nextn_predict_layers=1, moe_layer_freq=1, bos_token_id=0, eos_token_id=1,
    attention_bias=False, rope_scaling=None,
)
def write(name, cfg, quant=False):
    d = os.path.join(HERE, "configs", name + ("-fp8" if quant else ""))
    os.makedirs(d, exist_ok=True)
    c = dict(cfg)
    if quant: c["quantization_config"] = FP8
    json.dump(c, open(f"{d}/config.json", "w"), indent=1)
    print(d)
for q in (False, True):
    write("qwen3", base_qwen3, q); write("qwen3moe", base_qwen3moe, q); write("dsv3", base_dsv3, q)
base_glm5 = dict(
    architectures=["GlmMoeDsaForCausalLM"], model_type="glm_moe_dsa",
    hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
    num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
    n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
    routed_scaling_factor=2.5, norm_topk_prob=True, scoring_func="sigmoid", topk_method="noaux_tc",
    q_lora_rank=256, kv_lora_rank=512, qk_nope_head_dim=192, qk_rope_head_dim=64, v_head_dim=256,
    index_topk=64, index_head_dim=128, index_n_heads=4,
    vocab_size=1024, max_position_embeddings=2048, rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    hidden_act="silu", tie_word_embeddings=False, torch_dtype="bfloat16",
    num_nextn_predict_layers=1, bos_token_id=0, eos_token_id=1, attention_bias=False,
)
for q in (False, True):
    write("glm5", base_glm5, q)
# a vocabulary that is not a multiple of 64: vLLM pads it (1000 -> 1024 rows, 512 per rank at TP2)
write("qwen3-v1000", dict(base_qwen3, vocab_size=1000))
