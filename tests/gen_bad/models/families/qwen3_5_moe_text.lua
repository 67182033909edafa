-- A family named like vLLM's Qwen3.5-MoE text model type (qwen3_5_moe_text), built as Qwen3-MoE: vLLM
-- keeps that model type off DeepGEMM on Blackwell, so the SM100 profile refuses it (gen/engine.lua).
return include("qwen3_moe")
