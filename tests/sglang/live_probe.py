#!/usr/bin/env python
"""live_probe.py: a real SGLang 0.5.23 engine on this machine's CPU against the sglang profile (opt-in).

    SGLANG_USE_CPU_ENGINE=1 LD_LIBRARY_PATH=<dir with libcuda.so.1 -> CUDA's stub> \\
        PYTHONPATH=build/python:tests/sglang $SGLANG_PYTHON tests/sglang/live_probe.py CKPT_DIR [PLAN] [--tokens]

CKPT_DIR: a tiny bf16 checkpoint of PLAN's config (default plan sglang_qwen3_bf16_tp1 and
tests/vllm/configs/qwen3; mkdumps.sh makes them under $TMPDIR/refit-sglang-dumps/ckpt). Starts sglang.Engine(device="cpu") with two custom weight
loaders: this module's `layout` and refit's HOOK.

1. layout: inside the live TP worker (update_weights_from_tensor in a begin/end session), every
   parameter the model holds (name, dtype, shape, stride, storage) and the settings refit.sglang
   reads (EngineView.from_model), compared with the destinations of PLAN for receiver 0. Prints each difference ("layout: N of N destinations as the tables hold them").
2. bind: refit.sglang.bind as a user calls it (SGLang's CPU platform binds bf16 TP1 plans without MLA;
   before that platform existed it was refused as "no CUDA device").
3. --tokens (when 1 found no difference): the first real-engine token test (tests/sglang/real_engine.py
   is the one the test command runs). The worker is bound,
   and two refit.Trainer ranks in this process push version 1 = random fp32 masters through
   refit.sglang.update (pause, begin, arm/wait, end, continue); the engine then generates greedily.
   A fresh engine loaded from a checkpoint of the same masters (cast to bf16 as the tables cast,
   round to nearest even; experts per expert) generates the same prompt: tokens and logprobs must
   be equal.
Exits 0 when every step asked for did what it says, else 1.
"""
import dataclasses
import json
import os
import sys
import tempfile
import threading

os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
PLAN = "sglang_qwen3_bf16_tp1"
TOKEN = 0x5EC2E7
_CMD = "live_probe:"


def layout(model, named_tensors):
    """the custom weight loader: write what the TP worker holds to the command's file; with
    force_sm90, later views of this worker (refit.sglang.EngineView.from_model) report SM90"""
    import refit.sglang
    (name, _), = list(named_tensors)
    cmd = json.loads(name[len(_CMD):])
    view = refit.sglang.EngineView.from_model(model)
    params = {n: [str(t.dtype).replace("torch.", ""), list(t.shape), list(t.stride()), t.storage_offset(),
                  t.untyped_storage().nbytes(), t.device.type] for n, t in view.tensors.items()}
    settings = {f.name: getattr(view, f.name) for f in dataclasses.fields(view) if f.name != "tensors"}
    modules = sorted({type(getattr(m, "quant_method", None)).__name__ for _, m in model.named_modules()
                      if getattr(m, "quant_method", None) is not None})
    if cmd.get("force_sm90"):
        orig = refit.sglang.EngineView.from_model.__func__

        def from_model(cls, m):
            return dataclasses.replace(orig(cls, m), device_capability=(9, 0))
        refit.sglang.EngineView.from_model = classmethod(from_model)
    with open(cmd["out"], "w") as f:
        json.dump({"params": params, "settings": settings, "quant_methods": modules}, f, default=str)


def probe_layout(eng, tmp, force_sm90=False):
    import torch
    out = os.path.join(tmp, "layout.json")
    name = _CMD + json.dumps({"out": out, "force_sm90": force_sm90})
    assert eng.begin_weight_update()[0]
    try:
        ok, msg = eng.update_weights_from_tensor([(name, torch.zeros(1))], load_format="live_probe.layout")[:2]
    finally:
        assert eng.end_weight_update()[0]
    assert ok, msg
    with open(out) as f:
        return json.load(f)


def compare_layout(got):
    """differences between the worker's parameters and the plan's destinations of receiver 0"""
    import refit
    plan = refit.Plan(PLAN)
    diffs, same = [], 0
    params = got["params"]
    for name, i in plan.destinations(0).items():
        if name not in params:
            diffs.append(f"{name}: not among the worker's parameters")
            continue
        dt, shape, stride, off, nbytes, dev = params[name]
        want = (i.dtype, list(i.shape), list(i.stride), 0, i.bytes)
        if (dt, shape, stride, off, nbytes) != want:
            diffs.append(f"{name}: worker {dt} {shape} stride {stride} at {off} of {nbytes} bytes; tables {want}")
        else:
            same += 1
    extra = sorted(set(params) - set(plan.destinations(0)))
    return same, len(plan.destinations(0)), diffs, extra


def masters(seed=7):
    """random fp32 masters under the trainer's names (every rank's sources), norms near 1"""
    import numpy as np
    import refit
    plan = refit.Plan(PLAN)
    rng = np.random.default_rng(seed)
    sd = {}
    srcs = {n: i for r in range(plan.trainers) for n, i in plan.sources(r).items()}
    for n, i in sorted(srcs.items()):
        x = rng.normal(0, 0.05, size=i.shape).astype(np.float32)
        sd[n] = (1 + x) if n.endswith("norm.weight") else x
    return sd


def engine(ckpt):
    import sglang
    import refit
    import refit.sglang
    moe = any(".mlp.experts." in n for n in refit.Plan(PLAN).destinations(0))
    return sglang.Engine(model_path=ckpt, device="cpu", skip_tokenizer_init=True, tp_size=1, dtype="bfloat16",
                         disable_cuda_graph=True, mem_fraction_static=0.3, context_length=256, max_total_tokens=2048,
                         max_running_requests=4, attention_backend="torch_native", random_seed=0,
                         custom_weight_loader=["live_probe.layout", refit.sglang.HOOK],
                         **(dict(moe_runner_backend="triton") if moe else {}))  # the profile's runner


def generate(eng):
    out = eng.generate(input_ids=[[1, 5, 7, 9, 11, 13]], return_logprob=True,
                       sampling_params={"max_new_tokens": 12, "temperature": 0})
    o = out[0] if isinstance(out, list) else out
    return o["output_ids"], [lp[0] for lp in o["meta_info"]["output_token_logprobs"]]


def checkpoint(sd):
    """the masters as an HF checkpoint in bf16 (torch's cast rounds to nearest even, as the tables
    do): transformers 5's fused experts (gate_up_proj [E, 2I, H], gate rows first; down_proj
    [E, H, I]) as the per-expert tensors a checkpoint holds"""
    import numpy as np
    import torch
    out = {}
    for n, x in sd.items():
        t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.bfloat16)
        if n.endswith(".mlp.experts.gate_up_proj"):
            half = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[n[:-len("gate_up_proj")] + f"{e}.gate_proj.weight"] = t[e, :half].contiguous()
                out[n[:-len("gate_up_proj")] + f"{e}.up_proj.weight"] = t[e, half:].contiguous()
        elif n.endswith(".mlp.experts.down_proj"):
            for e in range(t.shape[0]):
                out[n[:-len("down_proj")] + f"{e}.down_proj.weight"] = t[e].contiguous()
        else:
            out[n] = t
    return out


def tokens_test(eng, ckpt, tmp):
    """bind (SM90 forced), push masters() as version 1, generate; then a fresh engine from a
    checkpoint of the same masters; (ok, message)"""
    from safetensors.torch import save_file
    import refit
    import refit.sglang
    plan = refit.Plan(PLAN)
    probe_layout(eng, tmp, force_sm90=True)
    infos = refit.sglang.bind(eng, PLAN, TOKEN, info_dir=tmp, tp_size=1, host="127.0.0.1", ucx_tls="tcp")
    before = generate(eng)
    sd = masters()
    errs, trs = [], []
    for rank in range(plan.trainers):
        tr = refit.Trainer(plan, rank, token=TOKEN, ucx_tls="tcp", timeout_ms=120000)
        assert tr.bind_module(sd) == []
        for i in infos:
            tr.import_blob(i["blob"])
        trs.append(tr)

    def push(tr):
        try:
            tr.push(1)
            assert tr.wait() == [], "a receiver was skipped"
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ths = [threading.Thread(target=push, args=(tr,)) for tr in trs]
    for t in ths:
        t.start()
    res = refit.sglang.update(eng, 1, info_dir=tmp, tp_size=1, timeout=120)
    for t in ths:
        t.join(180)
    for tr in trs:
        tr.close()
    if errs:
        return False, f"trainer: {errs[0]}"
    after = generate(eng)
    eng.shutdown()
    # the same masters as a checkpoint: bf16 (torch's cast rounds to nearest even, as the tables do)
    fresh_dir = os.path.join(tmp, "fresh")
    os.makedirs(fresh_dir)
    for f in os.listdir(ckpt):
        if f.endswith(".json"):
            with open(os.path.join(ckpt, f)) as a, open(os.path.join(fresh_dir, f), "w") as b:
                b.write(a.read())
    save_file(checkpoint(sd), os.path.join(fresh_dir, "model.safetensors"))
    fresh = engine(fresh_dir)
    try:
        want = generate(fresh)
    finally:
        fresh.shutdown()
    msg = (f"version 1 complete on receiver {res[0]['index']}; tokens before {before[0]}, after the push "
           f"{after[0]}, fresh load {want[0]}; logprobs after the push {'==' if after[1] == want[1] else '!='} "
           f"fresh load ({after[1][:3]} ... vs {want[1][:3]} ...)")
    return after == want and after[0] != before[0], msg


def main():
    global PLAN
    ckpt = sys.argv[1]
    PLAN = next((a for a in sys.argv[2:] if not a.startswith("--")), PLAN)
    import refit
    import refit.sglang
    ok = True
    tmp = tempfile.mkdtemp()
    eng = engine(ckpt)
    try:
        got = probe_layout(eng, tmp)
        same, total, diffs, extra = compare_layout(got)
        s = got["settings"]
        print(f"settings read in the live worker: version {s['version']}, device {s['device']}, capability "
              f"{s['device_capability']}, tp {s['tp_size']}, moe_runner_backend {s['moe_runner_backend']}, "
              f"ue8m0 {s['deepgemm_scale_ue8m0']}, repacking {s['repacking']}; quant methods {got['quant_methods']}")
        print(f"layout: {same} of {total} destinations of {PLAN} as the tables hold them; parameters beyond the "
              f"tables: {extra or 'none'}")
        for d in diffs:
            print("  differs:", d)
        try:  # SGLang's CPU platform (a CPU without AMX) binds bf16 TP1 plans without MLA
            refit.sglang.bind(eng, PLAN, TOKEN, info_dir=tmp, tp_size=1, host="127.0.0.1", ucx_tls="tcp")
            print("bind: bound")
        except refit.sglang.Refused as e:
            print(f"bind: refused ({e.setting}): {e}")
            ok = False
        if "--tokens" in sys.argv:
            if diffs:
                print("tokens: not run (the layout differs)")
                ok = False
            else:
                good, msg = tokens_test(eng, ckpt, tmp)
                eng = None
                print(f"tokens: {'equal' if good else 'DIFFER'}: {msg}")
                ok = ok and good
    finally:
        if eng is not None:
            eng.shutdown()
    print("ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
