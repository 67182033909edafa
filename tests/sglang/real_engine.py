#!/usr/bin/env python
"""real_engine.py: refit into a real SGLang 0.5.23 engine on this CPU (run by tests/test_sglang_engine.sh).

    SGLANG_USE_CPU_ENGINE=1 LD_LIBRARY_PATH=<dir with libcuda.so.1 -> CUDA's stub> PYTHONPATH=build/python \\
        <python of tests/venv.sh sglang> tests/sglang/real_engine.py PLAN CONFIG_DIR [PLAN CONFIG_DIR ...]

For each PLAN (an sglang plan with engine.device = "cpu") and its HF config:
1. checkpoints A and B: a transformers model of the config with random weights, one seed each (B's
   weights are other draws than A's), kept as fp32 masters under the trainer's names and saved as bf16
   checkpoints (torch's cast rounds to nearest even, as the tables do; experts per expert, as a
   checkpoint holds them);
2. a real sglang.Engine (offline API, device "cpu", torch_native attention, triton MoE runner) on A
   with refit.sglang.HOOK as custom weight loader: refit.sglang.bind binds its TP worker, the prompts
   are generated greedily (A's tokens);
3. the plan's refit.Trainer ranks (fp32 masters of B) push version 1 while refit.sglang.update
   pauses generation, opens SGLang's weight-update session, arms and waits, ends it and continues;
   the prompts are generated again;
4. a fresh engine loaded from B generates the prompts: tokens and logprobs after the push must equal
   the fresh load's, and differ from A's.
Prints `ok`/`FAIL` lines, one `real engine: sglang <version> <plan>: <N> tokens equal, logprobs equal`
line per plan that passes, then `N passed, N failed`. Before the plans, post_load_check: refit.sglang's
MLA finalize hook against SGLang's own post_load_weights (no engine: the CPU platform runs no MLA).
"""
import json
import os
import shutil
import sys
import tempfile
import threading

TOKEN = 0x5EC2E7
PROMPTS = [[1, 5, 7, 9, 11, 13], [42, 17, 300, 8, 99, 511, 3, 64]]
NEW_TOKENS = 10


def weights(config_dir, seed):
    """{trainer name: fp32 tensor}: a transformers model of the config, every parameter drawn anew
    (normal, std 0.05; norms 1 + that), as an FSDP2 trainer over transformers >= 5 holds it"""
    import torch
    import transformers
    cfg = transformers.AutoConfig.from_pretrained(config_dir)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, p in model.state_dict().items():
        x = torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.05
        out[n] = (1 + x) if n.endswith("norm.weight") else x
    return out


def save_checkpoint(sd, config_dir, path):
    """sd as a bf16 safetensors checkpoint with config_dir's config; transformers 5's fused experts
    (gate_up_proj [E, 2I, H], gate rows first; down_proj [E, H, I]) as the per-expert tensors a
    checkpoint holds (SGLang's loader reads those)"""
    from safetensors.torch import save_file
    os.makedirs(path)
    for f in os.listdir(config_dir):
        if f.endswith(".json"):
            shutil.copy(os.path.join(config_dir, f), path)
    out = {}
    for n, x in sd.items():
        t = x.to("cpu").to(__import__("torch").bfloat16)
        if n.endswith(".mlp.experts.gate_up_proj"):
            half, base = t.shape[1] // 2, n[:-len("gate_up_proj")]
            for e in range(t.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = t[e, :half].contiguous()
                out[f"{base}{e}.up_proj.weight"] = t[e, half:].contiguous()
        elif n.endswith(".mlp.experts.down_proj"):
            for e in range(t.shape[0]):
                out[f"{n[:-len('down_proj')]}{e}.down_proj.weight"] = t[e].contiguous()
        else:
            out[n] = t.contiguous()
    save_file(out, os.path.join(path, "model.safetensors"))


def engine(ckpt, moe):
    import sglang
    import refit.sglang
    return sglang.Engine(model_path=ckpt, device="cpu", skip_tokenizer_init=True, tp_size=1, dtype="bfloat16",
                         disable_cuda_graph=True, mem_fraction_static=0.3, context_length=256, max_total_tokens=2048,
                         max_running_requests=4, attention_backend="torch_native", random_seed=0,
                         custom_weight_loader=[refit.sglang.HOOK], log_level="error",
                         **(dict(moe_runner_backend="triton") if moe else {}))


def generate(eng):
    """[(tokens, logprobs)] of PROMPTS, greedy"""
    outs = eng.generate(input_ids=PROMPTS, return_logprob=True,
                        sampling_params={"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True})
    return [(o["output_ids"], [lp[0] for lp in o["meta_info"]["output_token_logprobs"]]) for o in outs]


def push(eng, plan, masters, tmp):
    """bind the engine's worker, push masters as version 1 from every trainer rank, update"""
    import refit
    import refit.sglang
    infos = refit.sglang.bind(eng, plan.name, TOKEN, info_dir=tmp, tp_size=1, host="127.0.0.1", ucx_tls="tcp")
    errs, trs = [], []
    for rank in range(plan.trainers):
        tr = refit.Trainer(plan, rank, token=TOKEN, ucx_tls="tcp", timeout_ms=120000)
        left = tr.bind_module(masters)
        if left:
            raise AssertionError(f"trainer {rank}: not bound: {left[:3]}")
        for i in infos:
            tr.import_blob(i["blob"])
        trs.append(tr)

    def run(tr):
        try:
            tr.push(1)
            skipped = tr.wait()
            if skipped:
                raise AssertionError(f"receivers skipped: {skipped}")
        except Exception as e:  # noqa: BLE001 (reported below)
            errs.append(e)
    ths = [threading.Thread(target=run, args=(tr,)) for tr in trs]
    for t in ths:
        t.start()
    try:
        res = refit.sglang.update(eng, 1, info_dir=tmp, tp_size=1, timeout=300)
    finally:
        for t in ths:
            t.join(360)
        for tr in trs:
            tr.close()
    if errs:
        raise errs[0]
    if not res[0]["complete"]:
        raise AssertionError(f"version 1 not complete on receiver {res[0]['index']}: {res[0]}")


def one(plan_name, config_dir, work):
    """(ok, message) for one plan"""
    import sglang
    import refit
    plan = refit.Plan(plan_name)
    moe = any(".mlp.experts." in n for n in plan.destinations(0))
    a, b = weights(config_dir, 1), weights(config_dir, 2)
    srcs = {n for r in range(plan.trainers) for n in plan.sources(r)}
    if srcs != set(b):
        return False, f"the transformers model's names are not the plan's sources: {sorted(srcs ^ set(b))[:3]}"
    save_checkpoint(a, config_dir, os.path.join(work, "A"))
    save_checkpoint(b, config_dir, os.path.join(work, "B"))
    tmp = os.path.join(work, "info")
    os.makedirs(tmp)
    eng = engine(os.path.join(work, "A"), moe)
    try:
        on_a = generate(eng)
        push(eng, plan, b, tmp)
        pushed = generate(eng)
    finally:
        eng.shutdown()
    fresh = engine(os.path.join(work, "B"), moe)
    try:
        on_b = generate(fresh)
    finally:
        fresh.shutdown()
    n = sum(len(t) for t, _ in pushed)
    detail = "; ".join(f"prompt {i}: A {a_[0]}, after the push {p[0]}, fresh B {f[0]}"
                       for i, (a_, p, f) in enumerate(zip(on_a, pushed, on_b)))
    if [t for t, _ in pushed] != [t for t, _ in on_b]:
        return False, f"tokens after the push differ from a fresh load of B: {detail}"
    if [lp for _, lp in pushed] != [lp for _, lp in on_b]:
        return False, (f"logprobs after the push differ from a fresh load of B: "
                       f"{[lp[:3] for _, lp in pushed]} vs {[lp[:3] for _, lp in on_b]}")
    if pushed == on_a or any(t == ta for (t, _), (ta, _) in zip(pushed, on_a)):
        return False, f"the push changed no prompt's tokens (B is not distinguishable from A): {detail}"
    print(f"     {detail}")
    return True, f"real engine: sglang {sglang.__version__} {plan_name}: {n} tokens equal, logprobs equal"


def post_load_check():
    """refit.sglang.PostLoad (the finalize hook of plans with sglang_mla_post_load steps) calling SGLang
    0.5.23's own MLA post-load, DeepseekV2WeightLoaderMixin.post_load_weights (DeepSeek-V3's and GLM-5's),
    on the attributes it reads, with plan sglang_dsv3_bf16_tp1's kv_b_proj shapes and bf16 values: the
    steps of one layer rebuild w_kc / w_vc of exactly that layer, then all steps every layer (the first
    one again in place), each equal to kv_b_proj's split [h, nope, lora] / [h, lora, v]"""
    import types
    import torch
    import refit
    import refit.sglang
    from sglang.srt.models.deepseek_common.deepseek_weight_loader import DeepseekV2WeightLoaderMixin
    name = "sglang_dsv3_bf16_tp1"
    if name not in refit.plans():
        return None, f"plan {name} is not in this build's plan set (./configure --plans=...)"
    plan = refit.Plan(name)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(f"{root}/tests/vllm/configs/dsv3/config.json") as f:
        cfg = json.load(f)
    nope, v = cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    steps = [(refit.sglang.MLA_STEP, n) for n in refit.sglang.mla_steps(plan, 0)]
    if [n for _, n in steps] != [f"model.layers.{i}.self_attn.kv_b_proj.weight" for i in range(cfg["num_hidden_layers"])]:
        return False, f"plan {name}: sglang_mla_post_load steps {steps}"
    g = torch.Generator().manual_seed(24)
    layers = []
    for _, n in steps:
        w = torch.randn(plan.destination(n, 0).shape, generator=g).to(torch.bfloat16)
        layers.append(types.SimpleNamespace(self_attn=types.SimpleNamespace(
            kv_b_proj=types.SimpleNamespace(weight=w), qk_nope_head_dim=nope, v_head_dim=v, w_kc=None, w_vc=None,
            w_scale=None)))
    model = types.SimpleNamespace(
        config=types.SimpleNamespace(num_hidden_layers=len(layers), architectures=["DeepseekV3ForCausalLM"]),
        model=types.SimpleNamespace(start_layer=0, end_layer=len(layers), layers=layers), quant_config=None)
    hook = refit.sglang.PostLoad(lambda **kw: DeepseekV2WeightLoaderMixin.post_load_weights(model, **kw))
    hook(1, steps[1:2])
    built = [x.self_attn.w_kc is not None for x in layers]
    if built != [i == 1 for i in range(len(layers))]:
        return False, f"the steps of layer 1 rebuilt w_kc of layers {built}"
    first = layers[1].self_attn.w_kc
    hook(2, steps)
    if layers[1].self_attn.w_kc is not first:
        return False, "layer 1's w_kc was replaced, not rebuilt in place"
    for i, x in enumerate(layers):
        a = x.self_attn
        w = a.kv_b_proj.weight.unflatten(0, (-1, nope + v))
        if not (torch.equal(a.w_kc, w[:, :nope, :]) and torch.equal(a.w_vc, w[:, nope:, :].transpose(1, 2))):
            return False, f"layer {i}: w_kc / w_vc are not kv_b_proj's split"
    h, lora = layers[0].self_attn.w_kc.shape[0], layers[0].self_attn.w_kc.shape[2]
    return True, (f"refit.sglang's finalize hook runs SGLang's own MLA post_load_weights for exactly the steps' layers "
                  f"({len(layers)} of plan {name}, w_kc [{h}, {nope}, {lora}], w_vc [{h}, {lora}, {v}])")


def main():
    args = sys.argv[1:]
    passed = failed = 0
    try:
        ok, msg = post_load_check()
    except Exception as e:  # noqa: BLE001
        ok, msg = False, f"{type(e).__name__}: {e}"
    print(f"{'skipped:' if ok is None else 'ok  ' if ok else 'FAIL'} {msg}")
    passed, failed = passed + (ok is True), failed + (ok is False)
    sys.stdout.flush()
    for plan_name, config_dir in zip(args[::2], args[1::2]):
        work = tempfile.mkdtemp(prefix="refit-sglang-engine-")
        try:
            ok, msg = one(plan_name, config_dir, work)
        except Exception as e:  # noqa: BLE001 (a failure names the plan)
            ok, msg = False, f"{type(e).__name__}: {e}"
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if ok:
            passed += 1
            print(f"ok   {msg}")
        else:
            failed += 1
            print(f"FAIL {plan_name}: {msg}")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
