"""gpu_e2e.py: refit end to end with real PyTorch trainers (the device machine; not run by CI).

Per plan (default: one plan per model family in this librefit.so): a tiny model of the plan's
config built with transformers' own modeling code (random init, the same seed on every rank),
sharded with FSDP2's fully_shard (masters in the plan's source dtype: fp32 once the plans' trainer
sections say so), one optimizer step per version, bound through refit.Trainer.bind_module, gathered
tensors refreshed, pushed into refit.Receivers; every destination byte (and derived tensor) is
compared with tests/engine_ref.py computed from the full HF state dict of that version (fused
experts split, TP/EP split, fused, block FP8).

    PYTHONPATH=build/python python3 tests/gpu_e2e.py [--trainers cuda|cpu] [--receivers cuda|cpu]
        [--versions 2] [--ucx-tls TLS] [PLAN ...]

Trainers: one process per rank, NCCL on one GPU each when there are enough GPUs, else gloo on the
CPU (engines in host memory). Receivers: CUDA engines when a GPU exists (writing into GPU memory
needs a CUDA-enabled UCX, README "GPU set-up"), else host. Needs torch >= 2.6 and transformers >= 5,
and plans that fit such trainers (gen-trainer's trainer section: fused 3-D experts as transformers 5
holds them, fp32 sources, no MTP layers on the trainer; a tiny DeepSeek-V3 plan). A plan that does
not fit is reported 'skipped: PLAN: why'. Prints ok/FAIL/skipped per plan and 'N passed, N failed'.
"""
import argparse
import multiprocessing as mp
import os
import re
import socket
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
TOKEN = 0xE2E
FAMILIES = ("qwen3", "qwen3_moe", "deepseek_v3", "glm_moe_dsa")


def model_cfg(plan):
    import engine_ref
    return engine_ref.model_config(f"{ROOT}/models/{plan.model}.lua")


def hf_config(c):
    """the transformers config of a models/<name>.lua config (tiny shapes, the family's layout)"""
    from transformers import AutoConfig
    f = c["family"]
    common = dict(vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                  num_attention_heads=c["heads"], tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
                  max_position_embeddings=512)
    if f in ("qwen3", "qwen3_moe"):
        common.update(num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"])
    if f == "qwen3":
        return AutoConfig.for_model("qwen3", intermediate_size=c["intermediate"], **common)
    if f == "qwen3_moe":
        return AutoConfig.for_model("qwen3_moe", num_experts=c["experts"], num_experts_per_tok=c["experts_per_token"],
                                    moe_intermediate_size=c["moe_intermediate"], decoder_sparse_step=1,
                                    mlp_only_layers=[], intermediate_size=c.get("intermediate", c["moe_intermediate"]),
                                    norm_topk_prob=True, **common)
    mla = dict(num_key_value_heads=c["heads"], q_lora_rank=c["q_lora_rank"], kv_lora_rank=c["kv_lora_rank"],
               qk_nope_head_dim=c["qk_nope_head_dim"], qk_rope_head_dim=c["qk_rope_head_dim"],
               v_head_dim=c["v_head_dim"], n_routed_experts=c["experts"], n_shared_experts=c["shared_experts"],
               num_experts_per_tok=c["experts_per_token"], moe_intermediate_size=c["moe_intermediate"],
               intermediate_size=c["intermediate"], first_k_dense_replace=c["first_dense"], n_group=1, topk_group=1,
               num_nextn_predict_layers=c.get("mtp_layers", 0))
    if f == "deepseek_v3":
        return AutoConfig.for_model("deepseek_v3", **mla, **common)
    return AutoConfig.for_model("glm_moe_dsa", index_n_heads=c["index_heads"], index_head_dim=c["index_head_dim"],
                                index_topk=c.get("index_topk", 64), **mla, **common)


def to_numpy(t):
    """a CPU torch tensor as numpy with engine_ref's dtypes"""
    import torch
    import engine_ref
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(engine_ref.BF16)
    if t.dtype == torch.float32:
        return t.numpy()
    raise ValueError(f"state dict holds {t.dtype}")


def split_experts(sd, hidden):
    """transformers 5's fused experts as the per-expert checkpoint tensors engine_ref takes:
    mlp.experts.gate_up_proj [E, 2I, H] (gate rows first) and mlp.experts.down_proj [E, H, I]"""
    out = {}
    for n, a in sd.items():
        m = re.fullmatch(r"(.*\.mlp\.experts)\.(gate_up_proj|down_proj)", n)
        if not m or a.ndim != 3:
            out[n] = a
            continue
        if m.group(2) == "gate_up_proj":
            assert a.shape[2] == hidden, f"{n}: {a.shape}, expected [E, 2I, {hidden}]"
            i = a.shape[1] // 2
            for e in range(a.shape[0]):
                out[f"{m.group(1)}.{e}.gate_proj.weight"] = a[e, :i]
                out[f"{m.group(1)}.{e}.up_proj.weight"] = a[e, i:]
        else:
            assert a.shape[1] == hidden, f"{n}: {a.shape}, expected [E, {hidden}, I]"
            for e in range(a.shape[0]):
                out[f"{m.group(1)}.{e}.down_proj.weight"] = a[e]
    return out


# ------------------------------------------------------------------------------------------------

def trainer_proc(rank, a, conn):
    try:
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from transformers import AutoModelForCausalLM

        import refit
        plan = refit.Plan(a["plan"])
        cuda = a["trainers"] == "cuda"
        if cuda:
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{a['port']}",
                                rank=rank, world_size=plan.trainers)
        shape = (plan.fsdp,) if plan.dp_replicate == 1 else (plan.dp_replicate, plan.fsdp)
        mesh = init_device_mesh(dev.type, shape)
        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(hf_config(model_cfg(plan))).to(dev)
        # masters in the dtype the plan gives each source (fp32 masters, bf16 sources, fp32 exceptions)
        want = {n: i.dtype for r in range(plan.trainers) for n, i in plan.sources(r).items()}
        for n, t in list(model.named_parameters()) + list(model.named_buffers()):
            t.data = t.data.to(getattr(torch, want.get(n, a["dtype"])))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        tr = refit.Trainer(plan, mesh=mesh, token=TOKEN, mem="cuda" if cuda else "host", ucx_tls=a["ucx_tls"],
                           timeout_ms=30000)
        try:
            gathered = tr.bind_module(model)
        except refit.BindError as e:  # the same on every rank: this plan does not fit the model
            conn.send(("skip", rank, f"bind_module: {e}"))
            return
        for r in tr.receivers:
            tr.connect(r, "127.0.0.1", a["ports"][r])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        tokens = torch.randint(0, model.config.vocab_size, (2, 16), device=dev, generator=None)
        conn.send(("ready", rank, len(gathered)))
        for v in range(1, a["versions"] + 1):
            assert conn.recv() == ("push", v)
            model(input_ids=tokens, labels=tokens).loss.backward()
            opt.step()
            opt.zero_grad()
            tr.refresh_gathered()
            tr.push(v)
            tr.wait()
            full = {}  # the full HF state dict of version v (full_tensor: a collective, same order everywhere)
            for n, t in list(model.named_parameters(remove_duplicate=False)) + \
                    list(model.named_buffers(remove_duplicate=False)):
                full[n] = (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()
            path = os.path.join(a["dir"], f"v{v}.pt")
            if rank == 0:
                torch.save(full, path + ".tmp")
                os.replace(path + ".tmp", path)
            dist.barrier()
            conn.send(("pushed", rank, v, path, tr.counters()["bytes"]))
        tr.close()
        dist.destroy_process_group()
    except Exception:
        conn.send(("fatal", rank, traceback.format_exc()))


def receiver_proc(index, a, conn):
    try:
        import torch

        import engine_ref
        import refit
        plan = refit.Plan(a["plan"])
        cuda = a["receivers"] == "cuda"
        if cuda:
            torch.cuda.set_device(index % torch.cuda.device_count())
        dev = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
        rx = refit.Receiver(plan, index, token=TOKEN, mem="cuda" if cuda else "host", ucx_tls=a["ucx_tls"],
                            timeout_ms=30000)
        bufs = {n: i.empty(device=dev) for n, i in rx.tensors.items()}
        for b in bufs.values():
            b.view(torch.uint8).fill_(0xA5)  # poison: a byte never written shows
        rx.bind(bufs)
        conn.send(("port", index, rx.listen("127.0.0.1")))
        c = model_cfg(plan)
        lua = open(f"{ROOT}/models/plans/{plan.name}.lua").read()
        fp8 = re.search(r"fp8\s*=\s*true", lua) is not None
        pos = plan._p.receiver(index)[1]
        for v in range(1, a["versions"] + 1):
            conn.send(("ready", index, v))
            rx.wait(v, timeout=300)
            if cuda:
                torch.cuda.synchronize()
            cmd = conn.recv()
            assert cmd[:2] == ("check", v), cmd
            sd = split_experts({n: to_numpy(t) for n, t in torch.load(cmd[2]).items()}, c["hidden"])
            want = engine_ref.engine_format(c["family"], c, sd, tp=plan.tp, ep=plan.ep, position=pos, fp8=fp8,
                                            ue8m0=plan.scale_fmt == "ue8m0")
            bad, first, total = 0, None, 0
            for n, w in want.items():
                got = bufs[n].cpu().contiguous().view(torch.uint8).numpy().reshape(-1)
                d = int((got != w.view(np.uint8).reshape(-1)).sum())
                if d and first is None:
                    first = f"receiver {index}: '{n}' differs in {d} of {w.nbytes} bytes"
                bad, total = bad + d, total + w.nbytes
            missing = sorted(set(bufs) - set(want))
            if missing and first is None:
                first = f"receiver {index}: the reference has no {missing[:3]}"
            conn.send(("result", index, v, bad + len(missing), total, first))
        rx.close()
    except Exception:
        conn.send(("fatal", index, traceback.format_exc()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_plan(name, args):
    """'ok ...' / 'skipped: ...' / raises AssertionError"""
    import torch

    import refit
    plan = refit.Plan(name)
    ngpu = torch.cuda.device_count()
    a = dict(plan=name, versions=args.versions, ucx_tls=args.ucx_tls, port=free_port(),
             dtype=plan.source("model.norm.weight").dtype,
             trainers=args.trainers or ("cuda" if ngpu >= plan.trainers else "cpu"),
             receivers=args.receivers or ("cuda" if ngpu else "cpu"))
    if a["trainers"] == "cuda" and ngpu < plan.trainers:
        return f"skipped: {name}: {plan.trainers} trainer ranks need as many GPUs for NCCL ({ngpu} here)"
    ctx = mp.get_context("spawn")
    procs, rc, tc = [], [], []

    def recv(c, what, timeout=600):
        if not c.poll(timeout):
            raise AssertionError(f"{name}: no answer from a {what} in {timeout} s")
        m = c.recv()
        if m[0] == "fatal":
            raise AssertionError(f"{name}: {what} {m[1]} failed:\n{m[2]}")
        return m

    with tempfile.TemporaryDirectory() as tmp:
        a["dir"] = tmp
        try:
            for r in range(plan.receivers):
                x, y = ctx.Pipe()
                procs.append(ctx.Process(target=receiver_proc, args=(r, a, y)))
                procs[-1].start()
                rc.append(x)
            a["ports"] = {m[1]: m[2] for m in (recv(c, "receiver") for c in rc)}
            for t in range(plan.trainers):
                x, y = ctx.Pipe()
                procs.append(ctx.Process(target=trainer_proc, args=(t, a, y)))
                procs[-1].start()
                tc.append(x)
            first = [recv(c, "trainer") for c in tc]
            if first[0][0] == "skip":
                return f"skipped: {name}: {first[0][2]}"
            compared = 0
            for v in range(1, args.versions + 1):
                for c in rc:
                    assert recv(c, "receiver")[0:3:2] == ("ready", v)
                for c in tc:
                    c.send(("push", v))
                pushed = [recv(c, "trainer") for c in tc]
                assert sum(m[4] for m in pushed) == v * plan.total_bytes, "trainers' byte counters"
                for c in rc:
                    c.send(("check", v, pushed[0][3]))
                for c in rc:
                    _, r, vv, bad, total, why = recv(c, "receiver")
                    assert bad == 0, f"{name} v{v}: {bad} bytes differ; first: {why}"
                    compared += total
            return (f"ok   {name} ({model_cfg(plan)['family']}, masters {a['dtype']}, trainers {a['trainers']}, "
                    f"receivers {a['receivers']}): {args.versions} versions, {plan.receivers} receivers, "
                    f"{compared} bytes equal, {first[0][2]} gathered sources")
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("plans", nargs="*")
    ap.add_argument("--versions", type=int, default=2)
    ap.add_argument("--trainers", choices=("cuda", "cpu"))
    ap.add_argument("--receivers", choices=("cuda", "cpu"))
    ap.add_argument("--ucx-tls", default=None)
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e} (run on the device machine)\n0 passed, 0 failed")
        return 0
    import refit
    plans = args.plans
    if not plans:  # one plan per family in this library
        by = {}
        for p in refit.plans():
            by.setdefault(model_cfg(refit.Plan(p))["family"], p)
        plans = [by[f] for f in FAMILIES if f in by]
        for f in FAMILIES:
            if f not in by:
                print(f"skipped: {f}: no plan of this family in librefit.so (./configure --plans=...)")
    passed = failed = 0
    for name in plans:
        t0 = time.monotonic()
        try:
            line = run_plan(name, args)
        except Exception as e:
            line = f"FAIL {name}: {e}"
        print(f"{line} ({time.monotonic() - t0:.0f} s)", flush=True)
        passed += line.startswith("ok")
        failed += line.startswith("FAIL")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
