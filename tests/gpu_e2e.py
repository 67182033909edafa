"""gpu_e2e.py: refit end to end with real PyTorch trainers (the device machine; not run by CI).

Per plan (default: one plan per family whose trainer section fits transformers 5 modules, fused
experts and no MTP layers: qwen3_tiny_fp8_tp4, qwen3_moe_tiny_ep2, dsv3_tiny_fp8_tp2, glm_tiny_rep2,
all with fp32 masters): a tiny model of the plan's HF config (tests/fixtures/hf, tests/vllm/configs)
built with transformers' own modeling code (random init, the same seed on every rank), its masters
in the dtypes the reference gives (tests/engine_ref.py hf_sources: fp32, or bf16 with the plan's
exceptions), sharded with FSDP2's fully_shard, one optimizer step per version, bound through
refit.Trainer.bind_module, gathered tensors refreshed, pushed into refit.Receivers holding tensors
laid out as vLLM does (Plan.engine_tensors: aliases one tensor, MLA views in their storage); every
destination byte (padding rows: left as they were) is compared with engine_ref computed from the
full HF state dict of that version.

    PYTHONPATH=build/python python3 tests/gpu_e2e.py [--trainers cuda|cpu] [--receivers cuda|cpu]
        [--versions 2] [--ucx-tls TLS] [--all] [--delta] [--lr LR] [PLAN ...]
    PYTHONPATH=build/python python3 tests/gpu_e2e.py --vllm|--sglang [--receivers cuda] [PLAN ...]

Trainers: one process per rank, NCCL on one GPU each when there are as many GPUs, else gloo on the
CPU. Receivers: CUDA engines (mem "cuda", every one on GPU index % count) when a GPU exists (needs a
CUDA-enabled UCX, README "GPU set-up"), else host. --all: every plan of this librefit.so that fits
transformers 5 trainers. --vllm: the plug-in on the GPU instead: each receiver is a stand-in of a
vLLM worker built from tests/vllm/dumps (torch tensors on the GPU with vLLM's names, strides and
shared storages, tests/vllm/standins.py) bound through refit.vllm.Binding, so the MLA refresh writes
the strided storage W_UK_T / W_UV view on the GPU; trainers bind a state dict (no torch.distributed;
these plans' trainers hold the MTP layer, which transformers does not load). --sglang: the same with
stand-ins of SGLang 0.5.23's TP workers built from tests/sglang/dumps, bound through
refit.sglang.Binding (one sglang_* plan per family, TP1, TP2 and EP2), each worker's finalize hook
(its model's post_load_weights for the plan's kv_b_proj layers, which rebuilds MLA's w_kc / w_vc) counted
once per complete version.
--receivers cuda without a GPU skips (the CPU parts run with --receivers cpu). Needs torch (and
transformers but for --vllm / --sglang); skips with a message without them. Prints one ok/FAIL/skipped line per
plan and 'N passed, N failed'. --delta: trainers push with delta (version 1 dense, then patches against
the version each receiver holds, real AdamW steps at --lr, default 1e-5 with --delta, 1e-2
without); every byte is compared as before, and each version's line says what went as patches.
"""
import argparse
import importlib.util
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import traceback
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE in sys.path:  # python puts the script's directory first; its vllm/ would shadow vLLM
    sys.path.remove(HERE)
TOKEN = 0xE2E
DEFAULT = ("qwen3_tiny_fp8_tp4", "qwen3_moe_tiny_ep2", "dsv3_tiny_fp8_tp2", "glm_tiny_rep2")
SGLANG_DEFAULT = ("sglang_qwen3_fp8_tp1", "sglang_qwen3moe_bf16_tp2_ep2", "sglang_dsv3_fp8_tp2", "sglang_glm5_bf16_tp2",
                  "sglang_glm5_fp8_tp1")
VLLM_DEFAULT = ("vllm_dsv3_fp8_tp2", "vllm_glm5_bf16_tp2", "vllm_glm5_fp8_tp1", "vllm_qwen3_v1000_bf16_tp2",
                "vllm_qwen3moe_fp8_tp1", "vllm_qwen3_fp8_tp1_sm100", "vllm_qwen3moe_fp8_tp1_sm100_deepgemm",
                "vllm_dsv3_fp8_tp1_sm100")
# the HF config.json of each model (models/<model>.lua was imported from it, refit import-hf)
CONFIGS = {"qwen3_tiny": "tests/fixtures/hf/models/qwen3_tiny", "qwen3_moe_tiny": "tests/fixtures/hf/models/qwen3_moe_tiny",
           "glm_tiny": "tests/fixtures/hf/models/glm_tiny", "dsv3_tiny": "tests/fixtures/hf/vllm/dsv3",
           "vllm_qwen3": "tests/vllm/configs/qwen3", "vllm_qwen3_v1000": "tests/vllm/configs/qwen3-v1000",
           "vllm_qwen3moe": "tests/vllm/configs/qwen3moe", "vllm_dsv3": "tests/vllm/configs/dsv3",
           "vllm_glm5": "tests/vllm/configs/glm5"}


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    sys.modules[name] = mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


engine_ref = _load("engine_ref", f"{HERE}/engine_ref.py")


def model_cfg(plan):
    return engine_ref.model_config(f"{ROOT}/models/{plan.model}.lua")


def options(plan):
    return engine_ref.plan_options(f"{ROOT}/models/plans/{plan.name}.lua")


def fits_transformers(plan):
    """whether a transformers 5 model can be this plan's trainer: fused experts, no MTP layers"""
    t = options(plan)["trainer"]
    return t["experts"] == "fused" and not t["mtp"] and plan.model in CONFIGS


def to_numpy(t):
    """a CPU torch tensor as numpy with engine_ref's dtypes"""
    import torch
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(engine_ref.BF16)
    if t.dtype == torch.float32:
        return t.numpy()
    raise ValueError(f"state dict holds {t.dtype}")


def tensor_bytes(t):
    """a tensor's elements as bytes (numpy uint8, C order), from torch (any device, any strides) or numpy"""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).view(np.uint8).reshape(-1)
    import torch
    return t.detach().cpu().contiguous().view(torch.uint8).numpy().reshape(-1)


def compare(want, got):
    """(bytes that differ, bytes compared, the first difference): every tensor of the reference once
    (aliases are one), each derived view; padding rows must still hold the poison 0xA5"""
    bad, total, first, seen = 0, 0, None, set()
    for n, w in want.items():
        if id(w) in seen:
            continue
        seen.add(id(w))
        g = got[n]
        pad = want.pad_rows.get(n, 0)
        real = w.shape[0] - pad
        assert tuple(g.shape) == w.shape, (n, tuple(g.shape), w.shape)
        d = int((tensor_bytes(g[:real]) != tensor_bytes(w[:real])).sum())
        if pad:
            d += int((tensor_bytes(g[real:]) != 0xA5).sum())
        if d and first is None:
            first = f"'{n}' differs in {d} of {w.nbytes} bytes" + (f" ({pad} padding rows)" if pad else "")
        bad, total = bad + d, total + w.nbytes
    return bad, total, first


def reference(plan, index, sd):
    o, c = options(plan), model_cfg(plan)
    return engine_ref.engine_format(c["family"], c, sd, tp=plan.tp, ep=plan.ep, position=plan._p.receiver(index)[1],
                                    fp8=o["fp8"], ue8m0=plan.scale_fmt == "ue8m0", engine=o["engine"],
                                    exclude=o["exclude"], requant=engine_ref.requant_of(plan, index))


def random_state_dict(plan, version):
    """the --vllm / --sglang trainers' weights: every source of the reference's list, a function of (version, name)"""
    c, o = model_cfg(plan), options(plan)
    out = {}
    for n, (shape, dt) in engine_ref.hf_sources(c["family"], c, **o["trainer"]).items():
        x = np.random.default_rng([version, zlib.crc32(n.encode())]).uniform(-1, 1, size=shape).astype(np.float32)
        out[n] = x if dt == "fp32" else engine_ref._cast(x, engine_ref.BF16)
    return out


# ------------------------------------------------------------------------------------------------

def trainer_proc(rank, a, conn):
    try:
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from transformers import AutoConfig, AutoModelForCausalLM

        import refit
        plan = refit.Plan(a["plan"])
        cuda = a["trainers"] == "cuda"
        if cuda:
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{a['port']}",
                                rank=rank, world_size=plan.trainers)
        if plan.dp_replicate == 1:
            mesh = init_device_mesh(dev.type, (plan.fsdp,), mesh_dim_names=("shard",))
        else:  # HSDP: FSDP2 wants the dimensions named
            mesh = init_device_mesh(dev.type, (plan.dp_replicate, plan.fsdp), mesh_dim_names=("replicate", "shard"))
        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(f"{ROOT}/{CONFIGS[plan.model]}"),
                                                 dtype=torch.float32).to(dev)
        # masters in the dtypes the reference gives each parameter (fp32, or bf16 with the plan's exceptions)
        c = model_cfg(plan)
        want = engine_ref.hf_sources(c["family"], c, **options(plan)["trainer"])
        for n, t in list(model.named_parameters()) + list(model.named_buffers()):
            if n in want:
                t.data = t.data.to(torch.float32 if want[n][1] == "fp32" else torch.bfloat16)
        main = torch.float32 if options(plan)["trainer"]["dtype"] == "fp32" else torch.bfloat16
        mixed = any(p.dtype != main for p in model.parameters())
        for layer in model.model.layers:
            for m in layer.modules():  # FSDP2 wants one dtype per unit: a dtype exception gets its own
                if m is not layer and any(p.dtype != main for p in m.parameters(recurse=False)):
                    fully_shard(m, mesh=mesh)
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        tr = refit.Trainer(plan, mesh=mesh, token=TOKEN, mem="cuda" if cuda else "host", ucx_tls=a["ucx_tls"],
                           timeout_ms=30000, delta=a["delta"])
        gathered = tr.bind_module(model)  # a BindError here: the tables do not fit transformers' modules
        for r in tr.receivers:
            tr.connect(r, "127.0.0.1", a["ports"][r])
        opt = torch.optim.AdamW(model.parameters(), lr=a["lr"])
        tokens = torch.randint(0, model.config.vocab_size, (2, 16), device=dev)
        conn.send(("ready", rank, len(gathered)))
        for v in range(1, a["versions"] + 1):
            assert conn.recv() == ("push", v)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mixed):  # an fp32 router among bf16
                loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            tr.refresh_gathered()
            tr.push(v)
            assert tr.wait() == [], "no receiver is down"
            full = {}  # the full HF state dict of version v (full_tensor: a collective, same order everywhere)
            for n, t in list(model.named_parameters(remove_duplicate=False)) + \
                    list(model.named_buffers(remove_duplicate=False)):
                full[n] = (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()
            path = os.path.join(a["dir"], f"v{v}.pt")
            if rank == 0:
                torch.save(full, path + ".tmp")
                os.replace(path + ".tmp", path)
            dist.barrier()
            k = tr.counters()
            conn.send(("pushed", rank, v, path, k["bytes"], k["deltas"], k["patch_bytes"], k["overflows"]))
        tr.close()
        dist.destroy_process_group()
    except Exception:
        conn.send(("fatal", rank, traceback.format_exc()))


def dict_trainer_proc(rank, a, conn):
    """--vllm / --sglang: a trainer rank binding the state dict of each version (every rank computes it)"""
    try:
        import refit
        plan = refit.Plan(a["plan"])
        tr = refit.Trainer(plan, rank, token=TOKEN, ucx_tls=a["ucx_tls"], timeout_ms=30000, delta=a["delta"])
        held = random_state_dict(plan, 1)
        gathered = tr.bind_module(held)
        for r in tr.receivers:
            tr.connect(r, "127.0.0.1", a["ports"][r])
        conn.send(("ready", rank, len(gathered)))
        for v in range(1, a["versions"] + 1):
            assert conn.recv() == ("push", v)
            for n, x in random_state_dict(plan, v).items():
                held[n][...] = x
            tr.push(v)
            assert tr.wait() == [], "no receiver is down"
            k = tr.counters()
            conn.send(("pushed", rank, v, None, k["bytes"], k["deltas"], k["patch_bytes"], k["overflows"]))
        tr.close()
    except Exception:
        conn.send(("fatal", rank, traceback.format_exc()))


def receiver_proc(index, a, conn):
    try:
        import torch

        import refit
        plan = refit.Plan(a["plan"])
        cuda = a["receivers"] == "cuda"
        if cuda:
            torch.cuda.set_device(index % torch.cuda.device_count())
        dev = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
        opts = dict(token=TOKEN, ucx_tls=a["ucx_tls"], timeout_ms=30000)
        finals = []  # --sglang: the weight names of each post_load_weights the receiver's finalize ran
        if a["plugin"]:  # a vLLM / SGLang worker's stand-in, bound through the plug-in
            import importlib
            plugin = importlib.import_module(f"refit.{a['plugin']}")
            standins = _load("standins", f"{HERE}/vllm/standins.py")
            dump = standins.dump_of(plan.name, f"{HERE}/{a['plugin']}/dumps")
            assert dump, f"no dump for plan '{plan.name}' in tests/{a['plugin']}/dumps"
            tensors, settings = standins.load(dump, plan._p.receiver(index)[1], device=dev)
            assert settings.pop("engine") == a["plugin"], dump
            for t in tensors.values():
                t.untyped_storage().fill_(0xA5)  # poison: a byte never written shows
            view = plugin.EngineView(tensors=tensors, device=dev, **settings)
            # host receivers: the profile's GPU, for the test; CUDA ones: this GPU (refused by name unless SM90),
            # but an SM100 plan's (its dump's B200: the UE8M0 pack kernel its finalize steps run is any GPU's)
            sm100 = settings["device_capability"][0] == 10
            view.device_capability = settings["device_capability"] if sm100 else \
                tuple(torch.cuda.get_device_capability(dev)) if cuda else (9, 0)
            extra = dict(post_load_weights=lambda is_nextn, weight_names: finals.append((is_nextn, weight_names))) \
                if a["plugin"] == "sglang" else {}
            b = plugin.Binding(plan, view, host="127.0.0.1", **opts, **extra)
            rx, port = b.rx, b.port
        else:
            rx = refit.Receiver(plan, index, mem="cuda" if cuda else "host", **opts)
            tensors = plan.engine_tensors(index, device=dev)
            for t in tensors.values():
                t.untyped_storage().fill_(0xA5)
            assert rx.bind(tensors) == [], rx.unbound
            port = rx.listen("127.0.0.1")
        conn.send(("port", index, port))
        c = model_cfg(plan)
        for v in range(1, a["versions"] + 1):
            conn.send(("ready", index, v))
            if a["plugin"]:
                b.update(v, timeout=300)
                mla = plugin.mla_steps(plan, b.index) if a["plugin"] == "sglang" else []
                want = [(False, mla)] * (v if mla else 0)
                assert finals == want, f"receiver {index}: post_load_weights ran {finals}, want {want}"
            else:
                rx.arm(v)
                rx.wait(v, timeout=300)
            if cuda:
                torch.cuda.synchronize()
            cmd = conn.recv()
            assert cmd[:2] == ("check", v), cmd
            sd = random_state_dict(plan, v) if a["plugin"] else {n: to_numpy(t) for n, t in torch.load(cmd[2]).items()}
            ref, got = reference(plan, index, sd), dict(tensors)
            kept = getattr(b, "kept", {}) if a["plugin"] else {}
            for n, buf in kept.items():  # SM100: the fp32 scales refit wrote, in the buffers the binding keeps
                got.update((al, buf) for al in (n,) + plan.destination(n, index).aliases)
            bad, total, first = compare(ref, got)
            for n in kept:  # ... and the engine's int32 scales (their whole storage) the UE8M0 pack of them
                t, w = tensors[n], ref[n.replace("weight_scale_inv", "weight")].shape
                held = t.as_strided((t.untyped_storage().nbytes() // 4,), (1,), 0).cpu().numpy()
                d = int((held.view(np.uint8) != engine_ref.ue8m0_pack(ref[n], w[-2], w[-1]).view(np.uint8).reshape(-1)).sum())
                if d and first is None:
                    first = f"'{n}' (int32 UE8M0) differs in {d} bytes from the pack of the fp32 scales"
                bad, total = bad + d, total + held.nbytes
            conn.send(("result", index, v, bad, total, first and f"receiver {index}: {first}"))
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
    a = dict(plan=name, versions=args.versions, ucx_tls=args.ucx_tls, port=free_port(), plugin=args.plugin,
             delta=args.delta, lr=args.lr if args.lr is not None else (1e-5 if args.delta else 1e-2),
             trainers="cpu" if args.plugin else args.trainers or ("cuda" if ngpu >= plan.trainers else "cpu"),
             receivers=args.receivers or ("cuda" if ngpu else "cpu"))
    if a["trainers"] == "cuda" and ngpu < plan.trainers:
        return f"skipped: {name}: {plan.trainers} trainer ranks need as many GPUs for NCCL ({ngpu} here)"
    if not args.plugin and not fits_transformers(plan):
        return f"skipped: {name}: its trainer section does not fit transformers 5 modules (per-expert or MTP layers)"
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
        ok = False
        try:
            for r in range(plan.receivers):
                x, y = ctx.Pipe()
                procs.append(ctx.Process(target=receiver_proc, args=(r, a, y)))
                procs[-1].start()
                rc.append(x)
            a["ports"] = {m[1]: m[2] for m in (recv(c, "receiver") for c in rc)}
            for t in range(plan.trainers):
                x, y = ctx.Pipe()
                procs.append(ctx.Process(target=dict_trainer_proc if args.plugin else trainer_proc, args=(t, a, y)))
                procs[-1].start()
                tc.append(x)
            first = [recv(c, "trainer") for c in tc]
            compared, before, over, notes = 0, 0, 0, []
            for v in range(1, args.versions + 1):
                for c in rc:
                    assert recv(c, "receiver")[0:3:2] == ("ready", v)
                for c in tc:
                    c.send(("push", v))
                pushed = [recv(c, "trainer") for c in tc]
                put = sum(m[4] for m in pushed)
                if not args.delta:
                    assert put == v * plan.total_bytes, "trainers' byte counters"
                else:  # the first version dense; later ones put patches where the base matches
                    assert v > 1 or put == plan.total_bytes, "trainers' byte counters"
                    assert v == 1 or sum(m[5] for m in pushed) > 0, f"{name} v{v}: no receiver got patches"
                    o = sum(m[7] for m in pushed)
                    notes.append(f"v{v} {put - before} B ({(put - before) / plan.total_bytes:.2%} of dense"
                                 + (f", {o - over} regions overflowed to dense)" if v > 1 else ", dense)"))
                    before, over = put, o
                for c in rc:
                    c.send(("check", v, pushed[0][3]))
                for c in rc:
                    _, r, vv, bad, total, why = recv(c, "receiver")
                    assert bad == 0, f"{name} v{v}: {bad} bytes differ; first: {why}"
                    compared += total
            ok = True
            what = f"{dict(vllm='vLLM', sglang='SGLang')[args.plugin]} stand-ins through refit.{args.plugin}" \
                if args.plugin else f"masters {options(plan)['trainer']['dtype']}"
            return (f"ok   {name} ({model_cfg(plan)['family']}, {what}, trainers {a['trainers']}, receivers "
                    f"{a['receivers']}): {args.versions} versions, {plan.receivers} receivers, {compared} bytes equal, "
                    f"{first[0][2]} gathered sources" + (f"; delta, lr {a['lr']:g}: " + ", ".join(notes) if notes else ""))
        finally:
            for p in procs:
                p.join(30 if ok else 0)
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
    ap.add_argument("--all", action="store_true", help="every plan of this librefit.so that fits transformers 5")
    ap.add_argument("--vllm", action="store_true", help="receivers: vLLM stand-ins bound through refit.vllm")
    ap.add_argument("--sglang", action="store_true", help="receivers: SGLang stand-ins bound through refit.sglang")
    ap.add_argument("--delta", action="store_true", help="trainers push with delta (patches after version 1)")
    ap.add_argument("--lr", type=float, default=None, help="AdamW learning rate (1e-5 with --delta, else 1e-2)")
    args = ap.parse_args()
    if args.vllm and args.sglang:
        ap.error("--vllm or --sglang, not both")
    args.plugin = "vllm" if args.vllm else "sglang" if args.sglang else None
    try:
        import torch
        if not args.plugin:
            import transformers  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e} (run on the device machine)\n0 passed, 0 failed")
        return 0
    if args.receivers == "cuda" and not torch.cuda.is_available():
        print("skipped: --receivers cuda: no CUDA device here (torch.cuda.is_available() is False)\n0 passed, 0 failed")
        return 0
    import refit
    plans = args.plans
    if not plans and args.plugin:
        plans = [p for p in (VLLM_DEFAULT if args.vllm else SGLANG_DEFAULT) if p in refit.plans()]
    elif not plans:
        plans = [p for p in refit.plans() if fits_transformers(refit.Plan(p))] if args.all else \
            [p for p in DEFAULT if p in refit.plans()]
        for p in DEFAULT:
            if p not in refit.plans():
                print(f"skipped: {p}: not in this librefit.so (./configure --plans=...)")
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
