"""examples/sglang_rl_step.py: one RL step with SGLang and refit, driven from one process.

    PYTHONPATH=build/python python examples/sglang_rl_step.py sglang_dsv3_bf16_tp2 tests/vllm/configs/dsv3

The driver starts the SGLang side (one process per TP worker) and the FSDP2 trainer ranks
(processes, gloo on the CPU here). refit.sglang.bind reaches every TP worker through SGLang's custom
weight loader inside a weight-update session; each worker binds its model's parameters by name as
one receiver of the plan and exports a blob, which the trainers import. One step: the trainers take
an optimizer step on their fp32 masters and push version 1; refit.sglang.update pauses generation,
begins the session, has every worker arm version 1 and wait until it is complete, ends the session
and continues. Each worker's receiver runs the model's post_load_weights for the plan's kv_b_proj
layers (MLA's w_kc / w_vc rebuilt, the plan's sglang_mla_post_load finalize steps) after the last
byte of version 1 is in and before the version is complete, so no trainer learns of it earlier. Each
worker then compares every byte it holds with the engine format of the trainer's new weights
(tests/engine_ref.py, numpy) and the example prints one line.

The SGLang side here is a stand-in: no generation, and each TP worker's model is the parameters
real SGLang 0.5.23 holds on an H100 (names, dtypes, shapes, strides, one storage each, as its dumps
in tests/sglang/dumps record them: tests/vllm/standins.py builds them as torch tensors on the CPU),
behind the calls refit.sglang makes of an sglang.Engine (begin_weight_update, end_weight_update,
update_weights_from_tensor with a custom weight loader, pause_generation, continue_generation).
With real SGLang on a GPU the driver is the same, with the engine started as README.md's SGLang
section shows. Needs torch, transformers, numpy, ml_dtypes and refit (the venv of
`sh tests/venv.sh trainer`; the plan's model config in the config directory).
"""
import argparse
import importlib.util
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import traceback

import refit
import refit.sglang

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = 0x5EC2E7


def _load(name, path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return sys.modules[name]


def engine_ref():
    return _load("engine_ref", f"{ROOT}/tests/engine_ref.py")


# ------------------------------------------------------------------------------------------------
# the SGLang side: a stand-in for one TP worker's model, and the engine's weight-update calls

class StandInModel:
    """The model in SGLang TP worker `rank`: its parameters as SGLang 0.5.23 holds them (the dump),
    refit_view() (what refit.sglang.worker_call binds) and post_load_weights, which rebuilds MLA's
    w_kc / w_vc from kv_b_proj as SGLang's DeepSeek weight loader does (no DeepGEMM bmm): both in
    storages of their own, w_kc [h, nope, lora] stride [., 1, nope], w_vc [h, lora, v] stride [., 1, lora];
    with weight_names, only the layers whose kv_b_proj they name (SGLang 0.5.23's signature)."""

    def __init__(self, plan, rank):
        import torch
        standins = _load("standins", f"{ROOT}/tests/vllm/standins.py")
        self.plan, self.events = plan, []
        dump = standins.dump_of(plan.name, f"{ROOT}/tests/sglang/dumps")
        if dump is None:
            raise SystemExit(f"no SGLang dump for plan '{plan.name}' in tests/sglang/dumps (an sglang_* plan)")
        tensors, settings = standins.load(dump, rank, device="cpu")
        assert settings.pop("engine") == "sglang", dump
        for t in tensors.values():
            t.untyped_storage().fill_(0xA5)  # poison: a byte never written shows
        self.view = refit.sglang.EngineView(tensors=tensors, device="cpu", **settings)
        self.cfg = engine_ref().model_config(f"{ROOT}/models/{plan.model}.lua")
        h = self.cfg.get("heads", 0) // plan.tp
        nope, v, lora = (self.cfg.get(k, 0) for k in ("qk_nope_head_dim", "v_head_dim", "kv_lora_rank"))
        self.derived = {}
        for name in self.view.mla_derived:  # transposed views of contiguous [h, lora, nope] / [h, v, lora]
            shape = (h, lora, nope) if name.endswith("w_kc") else (h, v, lora)
            self.derived[name] = torch.zeros(shape, dtype=torch.bfloat16).transpose(1, 2)

    def refit_view(self):
        return self.view

    def post_load_weights(self, is_nextn=False, weight_names=None):
        import torch
        t, c = self.view.tensors, self.cfg
        nope, v = c["qk_nope_head_dim"], c["v_head_dim"]
        assert not is_nextn, "the sglang profile has no NextN layer"
        layers = None if weight_names is None else {n.split(".")[2] for n in weight_names if "kv_b_proj" in n}
        rebuilt = 0
        for name, dst in self.derived.items():
            attn = name.rsplit(".", 1)[0]
            if layers is not None and attn.split(".")[2] not in layers:
                continue
            rebuilt += 1
            w = t[attn + ".kv_b_proj.weight"]
            if w.dtype == torch.float8_e4m3fn:  # block FP8: dequantized to bf16 (128x128 blocks)
                s = t[attn + ".kv_b_proj.weight_scale_inv"]
                s = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:w.shape[0], :w.shape[1]]
                w = (w.float() * s).to(torch.bfloat16)
            w_kc, w_vc = w.unflatten(0, (-1, nope + v)).split([nope, v], dim=1)
            dst.copy_(w_kc if name.endswith("w_kc") else w_vc.transpose(1, 2))  # in place: addresses survive
        try:  # inside the receiver's finalize hook a call into the receiver raises: the version is not complete yet
            where = f"after complete {refit.sglang._binding.rx.poll().complete}"
        except refit.Error as e:
            if "from inside its finalize hook" not in str(e):
                raise
            where = "before complete"
        self.events.append(("post_load_weights", where, rebuilt))


def tp_worker(rank, plan_name, conn):
    """one SGLang TP worker process: runs what the engine sends it (the custom weight loader, its own
    post-load step at the end of a session without loaded weights, the example's byte check)"""
    try:
        plan = refit.Plan(plan_name)
        model = StandInModel(plan, rank)
        conn.send(("up", rank))
        while True:
            op, arg = conn.recv()
            if op == "quit":
                break
            if op == "load":  # update_weights_from_tensor(load_format=HOOK): the loader on this worker's model
                refit.sglang.worker_call(model, arg)
                conn.send(("ok", rank))
            elif op == "post_load":
                model.post_load_weights()
                conn.send(("ok", rank))
            elif op == "events":  # what ran in this worker since the last call, its newest complete version
                conn.send(("ok", list(model.events), refit.sglang._binding.rx.poll().complete))
                model.events.clear()
            elif op == "check":
                conn.send(("ok",) + check(plan, rank, model, arg))
    except Exception:
        conn.send(("fatal", rank, traceback.format_exc()))


def check(plan, rank, model, path):
    """(bytes equal, first difference or None, derived tensors compared): every table tensor of this
    worker against the engine format of the state dict at path, w_kc / w_vc against its kv_b_proj"""
    import numpy as np
    import torch
    er = engine_ref()
    o = er.plan_options(f"{ROOT}/models/plans/{plan.name}.lua")
    sd = {}
    for n, x in torch.load(path).items():
        x = x.contiguous()
        sd[n] = x.numpy() if x.dtype == torch.float32 else x.view(torch.int16).numpy().view(er.BF16)
    index = refit.sglang._binding.index
    want = er.engine_format(model.cfg["family"], model.cfg, sd, tp=plan.tp, ep=plan.ep,
                            position=plan._p.receiver(index)[1], fp8=o["fp8"], ue8m0=False, engine=o["engine"],
                            exclude=o["exclude"])

    def raw(x):
        if isinstance(x, np.ndarray):
            return np.ascontiguousarray(x).view(np.uint8).reshape(-1)
        return x.contiguous().view(torch.uint8).numpy().reshape(-1)

    equal, first = 0, None
    for name, w in want.items():
        got, pad = model.view.tensors[name], want.pad_rows.get(name, 0)
        real = w.shape[0] - pad
        diff = int((raw(got[:real]) != raw(w[:real])).sum()) + (int((raw(got[real:]) != 0xA5).sum()) if pad else 0)
        if diff and first is None:
            first = f"'{name}' differs in {diff} of {w.nbytes} bytes"
        equal += w.nbytes - diff
    nope, v = model.cfg.get("qk_nope_head_dim"), model.cfg.get("v_head_dim")
    for name, dst in model.derived.items():
        kv = want[name.rsplit(".", 1)[0] + ".kv_b_proj.weight"]
        kv = kv.reshape(-1, nope + v, kv.shape[1])
        ref = kv[:, :nope, :] if name.endswith("w_kc") else kv[:, nope:, :].transpose(0, 2, 1)
        if not np.array_equal(raw(dst), raw(ref)) and first is None:
            first = f"'{name}' is not kv_b_proj's (post_load_weights)"
    return equal, first, len(model.derived)


class StandInEngine:
    """The calls refit.sglang makes of an sglang.Engine (0.5.23), over one process per TP worker:
    begin_weight_update / end_weight_update (a session; end runs the model's post_load_weights only
    when no update_weights_from_tensor loaded weights in it), update_weights_from_tensor (refused
    outside a session, as SGLang does; a load_format listed in custom_weight_loader runs in every
    worker), pause_generation / continue_generation."""

    def __init__(self, plan, custom_weight_loader=()):
        self.tp_size, self.custom_weight_loader = plan.tp, list(custom_weight_loader)
        self.session, self.paused, self.calls = None, False, []
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for r in range(plan.tp):
            a, b = ctx.Pipe()
            self.procs.append(ctx.Process(target=tp_worker, args=(r, plan.name, b), daemon=True))
            self.procs[-1].start()
            self.conns.append(a)
        self._all(None)  # every worker is up

    def _all(self, msg, timeout=600):
        if msg is not None:
            for c in self.conns:
                c.send(msg)
        out = []
        for r, c in enumerate(self.conns):
            if not c.poll(timeout):
                raise RuntimeError(f"SGLang TP worker {r}: no answer in {timeout} s")
            m = c.recv()
            if m[0] == "fatal":
                raise RuntimeError(f"SGLang TP worker {m[1]} failed:\n{m[2]}")
            out.append(m)
        return out

    def begin_weight_update(self):
        if self.session is not None:
            return False, "A weight update session is already open"
        self.calls.append("begin")
        self.session = {"loaded_weights": False}
        return True, "Success"

    def end_weight_update(self):
        if self.session is None:
            return False, "No weight update session is open"
        self.calls.append("end")
        if not self.session["loaded_weights"]:
            self._all(("post_load", None))
        self.session = None  # (and process_weights_after_loading: nothing to do for these methods)
        return True, "Success"

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
        if self.session is None:
            return False, "update_weights_from_tensor must run between begin_weight_update() and end_weight_update()"
        if load_format not in self.custom_weight_loader:
            return False, f"load_format {load_format!r} is not a custom weight loader of this engine"
        self.session["loaded_weights"] = True
        self._all(("load", [(n, None) for n, _ in named_tensors]))  # the command travels as the name
        return True, "Success"

    def pause_generation(self, mode="retract"):
        self.calls.append("pause")
        self.paused = True

    def continue_generation(self):
        self.calls.append("continue")
        self.paused = False

    def shutdown(self):
        for c in self.conns:
            c.send(("quit", None))
        for p in self.procs:
            p.join(30)


# ------------------------------------------------------------------------------------------------
# the trainer ranks

def trainer(rank, plan_name, config_dir, blobs, port, out, go, done):
    """one FSDP2 trainer rank: fp32 masters, bind the shards, import every receiver's blob, one
    optimizer step, push version 1; rank 0 saves the full state dict of version 1 at out"""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        plan = refit.Plan(plan_name)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=plan.trainers)
        mesh = init_device_mesh("cpu", (plan.fsdp,))
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir), dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        tr = refit.Trainer(plan, mesh=mesh, token=TOKEN)
        tr.bind_module(model)
        for r in tr.receivers:
            tr.import_blob(blobs[r])
        go.wait()  # the rollouts of version 0 are done (a real trainer would learn from them)
        tokens = torch.randint(0, model.config.vocab_size, (2, 16))
        model(input_ids=tokens, labels=tokens).loss.backward()
        torch.optim.AdamW(model.parameters(), lr=1e-2).step()
        tr.refresh_gathered()
        tr.push(1)   # each receiver's writes go out once its worker armed version 1
        tr.wait()    # every receiver acknowledged version 1 complete
        full = {n: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()
                for n, t in list(model.named_parameters()) + list(model.named_buffers())}
        if rank == 0:
            torch.save(full, out)
        tr.close()
        dist.destroy_process_group()
        done.put((rank, None))
    except Exception:
        done.put((rank, traceback.format_exc()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("plan", help="an sglang_* plan (models/plans), e.g. sglang_dsv3_bf16_tp2")
    ap.add_argument("config", help="a directory with the model's HF config.json (tests/vllm/configs/<model>)")
    ap.add_argument("--port", type=int, default=0, help="the trainers' gloo rendezvous (0: a free port)")
    args = ap.parse_args()
    if not args.port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            args.port = s.getsockname()[1]

    plan = refit.Plan(args.plan)
    engine = StandInEngine(plan, custom_weight_loader=[refit.sglang.HOOK])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            # every worker checks the engine against the plan's tables, binds, listens and exports
            infos = refit.sglang.bind(engine, plan.name, TOKEN, info_dir=tmp, tp_size=plan.tp, host="127.0.0.1")
            blobs = {i["index"]: i["blob"] for i in infos}
            ctx = mp.get_context("spawn")
            go, done, sd = ctx.Event(), ctx.Queue(), os.path.join(tmp, "v1.pt")
            ranks = [ctx.Process(target=trainer, args=(r, plan.name, os.path.abspath(args.config), blobs, args.port,
                                                       sd, go, done)) for r in range(plan.trainers)]
            for p in ranks:
                p.start()
            # ... the engine generates rollouts with version 0 here ...
            go.set()  # train and push
            engine._all(("events", None))
            engine.calls.clear()
            refit.sglang.update(engine, 1, info_dir=tmp, tp_size=plan.tp, timeout=300)
            for _ in ranks:
                r, err = done.get(timeout=600)
                if err:
                    raise RuntimeError(f"trainer rank {r} failed:\n{err}")
            for p in ranks:
                p.join()
            # ... and with version 1 here
            events = engine._all(("events", None))
            checks = engine._all(("check", sd))
        finally:
            engine.shutdown()
    bad = [f"worker {r}: {c[2]}" for r, c in enumerate(checks) if c[2]]
    # update's calls on the engine, with what every worker ran inside the session
    derived = sum(c[3] for c in checks)  # MLA's w_kc / w_vc: post_load_weights must have rebuilt them all,
    # once per worker, inside its receiver's finalize (before version 1 was complete)
    post = all(len(e[1]) == (1 if derived else 0) and all(x[:2] == ("post_load_weights", "before complete")
                                                           for x in e[1]) for e in events)
    post = post and sum(x[2] for e in events for x in e[1]) == derived
    seq = " -> ".join("begin -> arm/wait" + ("(post_load_weights before complete)" if derived and post else "")
                      if c == "begin" else c for c in engine.calls)
    ok = not bad and post and all(e[2] == 1 for e in events) and engine.calls == ["pause", "begin", "end", "continue"]
    print(f"{'ok' if ok else 'FAIL'} {plan.name}: one RL step, {plan.trainers} FSDP2 ranks (fp32 masters, AdamW) "
          f"pushed version 1 into {plan.tp} SGLang TP workers: {seq}; "
          f"{sum(c[1] for c in checks)} bytes equal to the engine format of the new weights"
          + (f", {derived} w_kc/w_vc rebuilt from kv_b_proj" if derived and ok else "")
          + ("" if ok else f"; {'; '.join(bad) or events}"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
