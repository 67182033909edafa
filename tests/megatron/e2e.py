"""e2e.py: real Megatron-core trainer ranks push into receivers laid out as vLLM holds the model.

    python tests/megatron/e2e.py [PLAN...]      (tests/test_megatron_e2e.sh runs it in the venv of
                                                 tests/venv.sh megatron, PYTHONPATH=build/python;
                                                 no PLAN: every megatron_* plan librefit.so carries)

For each plan (a megatron trainer profile: TP, PP, EP sizes in its trainer section), one gloo
process per trainer rank builds the plan's model as a real megatron-core GPTModel (local layer
specs, e2e_model.py), binds it with refit.Trainer.bind_megatron (its own names, its own shard, the
rank from Megatron's parallel state) and pushes over TCP on loopback into one receiver process per
engine GPU (Plan.engine_tensors: vLLM's layout, poisoned first). Versions 1 and 2 go dense (every
weight new), then a delta trainer on the same modules pushes version 3 dense and 4, 5 as patches (1%
of the values change per version). After each version every receiver compares every destination
byte with engine_ref.engine_format of the same weights exported to HF names: by an independent
conversion of every rank's shards (e2e_model.to_hf), which for dense Qwen3 models Megatron-Bridge's
export must equal bit for bit (Bridge 0.3.1 cannot export SequentialMLP experts or run MLA here).
Prints one line per plan: `megatron: <plan> tp <T> pp <P> ep <E>: <N> bytes equal`.
"""
import multiprocessing as mp
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_ref  # noqa: E402
import refit  # noqa: E402

TOKEN = 0x5EED_0F_3E6A7
DENSE, DELTA = (1, 2), (3, 4, 5)  # versions pushed by the dense trainer, then by the delta trainer
WAIT = 180  # seconds: only catches hangs (imports of torch and megatron take a minute on a loaded host)


def layout(plan):
    """the plan's Megatron trainer: {tp, pp, ep, etp, dtype, mtp, vocab} from its Lua file"""
    lua = re.sub(r"--[^\n]*", "", open(f"{ROOT}/models/plans/{plan.name}.lua").read())
    tr = engine_ref.lua_table(lua, "trainer")

    def num(k, d):
        m = re.search(r"\b" + k + r"\s*=\s*(\d+)", tr)
        return int(m.group(1)) if m else d

    dt = re.search(r'\bdtype\s*=\s*"(\w+)"', tr)
    tp = num("tp", 1)
    out = dict(tp=tp, pp=num("pp", 1), ep=num("ep", 1), etp=num("etp", 0) or None,
               dtype=dt.group(1) if dt else "fp32", mtp=re.search(r"\bmtp\s*=\s*true", tr) is not None,
               delta=re.search(r"\bdelta\s*=\s*\{", lua) is not None)  # patch areas: delta pushes
    cfg = engine_ref.model_config(f"{ROOT}/models/{plan.model}.lua")
    div = num("vocab_divisible", 128)  # the plan key's default, Megatron-LM's make_vocab_size_divisible_by
    out["vocab"] = -(-cfg["vocab"] // (div * tp)) * div * tp  # Megatron-LM's _vocab_size_with_padding
    return out


# ------------------------------------------------------------------------------------------------
# HF weights between processes: {name: (dtype name, shape, bytes)}

def save_hf(sd, path):
    import torch
    out = {}
    for n, t in sd.items():
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:
            out[n] = ("bf16", tuple(t.shape), t.view(torch.int16).numpy().tobytes())
        else:
            out[n] = ("fp32", tuple(t.shape), t.float().numpy().tobytes())
    with open(path + ".tmp", "wb") as f:
        pickle.dump(out, f)
    os.replace(path + ".tmp", path)


def load_hf(path):
    with open(path, "rb") as f:
        raw = pickle.load(f)
    return {n: np.frombuffer(b, engine_ref.NUMPY[d]).reshape(s) for n, (d, s, b) in raw.items()}


# ------------------------------------------------------------------------------------------------
# receivers: numpy only (forked before torch is imported)

POISON = 0xA5


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


def compare(want, got):
    """(bytes that differ, bytes of weights compared, the first difference): every destination once
    (aliases share one array), each derived view; rows past pad_rows must still hold the poison"""
    bad, written, first, seen = 0, 0, None, set()
    for n, w in want.items():
        if id(w) in seen:
            continue
        seen.add(id(w))
        g = got[n]
        assert g.shape == w.shape and g.dtype == w.dtype, (n, g.shape, g.dtype, w.shape, w.dtype)
        real = w.shape[0] - want.pad_rows.get(n, 0)
        d = int((_bits(g[:real]) != _bits(w[:real])).sum()) + int((_bits(g[real:]) != POISON).sum())
        if d and first is None:
            first = f"'{n}' differs in {d} of {w.nbytes} bytes"
        bad += d
        if n not in want.derived:
            written += w[:real].nbytes
    return bad, written, first


def receiver_proc(plan_name, index, versions, conn):
    try:
        plan = refit.Plan(plan_name)
        cfg = engine_ref.model_config(f"{ROOT}/models/{plan.model}.lua")
        opts = engine_ref.plan_options(f"{ROOT}/models/plans/{plan_name}.lua")
        rx = refit.Receiver(plan, index, token=TOKEN, ucx_tls="tcp", timeout_ms=60000)
        tensors = plan.engine_tensors(index)
        for t in tensors.values():
            a = t
            while isinstance(a.base, np.ndarray):
                a = a.base
            a.view(np.uint8)[...] = POISON
        assert rx.bind(tensors) == [], rx.unbound
        conn.send(("port", index, rx.listen("127.0.0.1")))
        for v in versions:
            rx.arm(v)
            conn.send(("ready", index, v))
            st = rx.wait(v, timeout=WAIT)
            cmd = conn.recv()
            assert cmd[0] == "check" and cmd[1] == v, cmd
            want = engine_ref.engine_format(cfg["family"], cfg, load_hf(cmd[2]), tp=plan.tp, ep=plan.ep,
                                            position=plan._p.receiver(index)[1], fp8=opts["fp8"],
                                            ue8m0=plan.scale_fmt == "ue8m0", engine=opts["engine"],
                                            exclude=opts["exclude"])
            bad, written, first = compare(want, tensors)
            conn.send(("result", index, v, st.complete, bad, written, first, rx.counters()["deltas"]))
        rx.close()
    except Exception:
        conn.send(("fatal", index, traceback.format_exc()))


# ------------------------------------------------------------------------------------------------
# trainers: one spawned process per rank, megatron-core inside

def trainer_proc(rank, world, port, plan_name, addrs, tmp, conn):
    try:
        import logging
        import warnings
        warnings.filterwarnings("ignore")  # megatron-core's "Transformer Engine / Apex not installed"
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
        import torch
        import torch.distributed as dist
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        from megatron.core import parallel_state as ps
        import e2e_model

        plan = refit.Plan(plan_name)
        lay = layout(plan)
        cfg = engine_ref.model_config(f"{ROOT}/models/{plan.model}.lua")
        family = cfg["family"]
        ps.initialize_model_parallel(tensor_model_parallel_size=lay["tp"], pipeline_model_parallel_size=lay["pp"],
                                     expert_model_parallel_size=lay["ep"], expert_tensor_parallel_size=lay["etp"])
        e2e_model.patch_cpu()
        model = e2e_model.build(cfg, family, lay["tp"], lay["pp"], lay["ep"], lay["etp"], vocab=lay["vocab"],
                                mtp=lay["mtp"], dtype=lay["dtype"])
        c = e2e_model.coords()
        bridge = family == "qwen3" and bridge_on()
        if bridge and rank == 0:
            e2e_model.write_hf_checkpoint(family, cfg, f"{tmp}/hf")
        dist.barrier()
        if world > 1:  # another rank's Trainer refuses this rank's model, naming both ranks
            other = (rank + 1) % world
            wrong = refit.Trainer(plan, other, token=TOKEN, ucx_tls="tcp")
            try:
                wrong.bind_megatron(model)
                raise AssertionError(f"trainer rank {other} bound the model of rank {rank}")
            except refit.Error as e:
                assert f"trainer rank {other} of plan '{plan_name}' binding a Megatron model whose parallel state " \
                       f"gives rank {rank}" in str(e), str(e)
            wrong.close()
        bridged = 0
        for delta, versions in ((False, DENSE), (True, DELTA))[:2 if lay["delta"] else 1]:
            tr = refit.Trainer(plan, plan.megatron_rank(), token=TOKEN, ucx_tls="tcp", timeout_ms=60000, delta=delta)
            assert tr.rank == rank, (tr.rank, rank, c)  # Megatron's default order: the global rank
            assert tr.bind_megatron(model) == [], "nothing gathered"
            for r in tr.receivers:
                tr.connect(r, "127.0.0.1", addrs[r])
            for v in versions:
                cmd = conn.recv()
                assert cmd == ("push", v), cmd
                e2e_model.fill(model, v, c, base=versions[0] if delta else None, vocab=cfg["vocab"])
                shards = [None] * world
                dist.all_gather_object(shards, e2e_model.local_shards(model, c))
                hf = e2e_model.to_hf(shards, family, cfg)
                if bridge:  # Megatron-Bridge's export of the same modules must equal the independent one
                    exported = e2e_model.bridge_export(model, f"{tmp}/hf")
                    assert sorted(exported) == sorted(hf), sorted(set(exported) ^ set(hf))
                    for n, t in exported.items():
                        if n in ("model.embed_tokens.weight", "lm_head.weight") and t.shape[0] > cfg["vocab"]:
                            # Bridge 0.3.1 keeps Megatron's padding rows (it trims only vocabularies its
                            # own model provider padded): the rows past the vocabulary are fill's padding
                            assert bool((t[cfg["vocab"]:] == 1e4).all()), f"Bridge's '{n}': padding rows"
                            t = t[:cfg["vocab"]]
                        assert t.dtype == hf[n].dtype and torch.equal(t, hf[n]), \
                            f"Bridge's '{n}' {t.dtype} {tuple(t.shape)} differs from {hf[n].dtype} {tuple(hf[n].shape)}"
                    bridged += len(exported)
                if rank == 0:
                    save_hf(hf, f"{tmp}/hf_v{v}.pkl")
                tr.push(v)
                assert tr.wait() == [], "no receiver is down"
                cnt = tr.counters()
                conn.send(("pushed", rank, v, cnt["bytes"], cnt["deltas"], f"{tmp}/hf_v{v}.pkl", bridged))
            tr.close()
        conn.recv()
        dist.destroy_process_group()
    except Exception:
        print(f"trainer rank {rank}: {traceback.format_exc()}", file=sys.stderr, flush=True)
        conn.send(("fatal", rank, traceback.format_exc()))


def bridge_on():
    """Bridge's export runs unless REFIT_MEGATRON_BRIDGE=0 (for dense Qwen3: MoE SequentialMLP experts
    fail in its gather_from_ep_ranks, which parses TEGroupedMLP's weight<N> names; MLA needs TE)"""
    return os.environ.get("REFIT_MEGATRON_BRIDGE", "1") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(plan_name):
    plan = refit.Plan(plan_name)
    lay = layout(plan)
    for r in range(plan.trainers):  # names repeat across ranks (decoder.layers.0 on every stage): each rank's own
        for n, i in plan.sources(r).items():
            assert plan.source(n, r) == i, (plan_name, r, n, plan.source(n, r).id, i.id)
    world = plan.trainers
    fork, spawn = mp.get_context("fork"), mp.get_context("spawn")
    procs, rconns, tconns, done = [], [], [], False

    def recv(c, what):
        if not c.poll(WAIT):
            raise AssertionError(f"{plan_name}: no answer from a {what} in {WAIT} s")
        m = c.recv()
        if m[0] == "fatal":
            raise AssertionError(f"{plan_name}: {what} {m[1]} failed:\n{m[2]}")
        return m

    versions = DENSE + DELTA if lay["delta"] else DENSE
    tmp = tempfile.mkdtemp(prefix="refit-megatron-")
    total = 0
    try:
        for r in range(plan.receivers):
            a, b = fork.Pipe()
            procs.append(fork.Process(target=receiver_proc, args=(plan_name, r, versions, b)))
            procs[-1].start()
            rconns.append(a)
        addrs = {}
        for c in rconns:
            _, r, port = recv(c, "receiver")
            addrs[r] = port
        port = free_port()
        for t in range(world):
            a, b = spawn.Pipe()
            procs.append(spawn.Process(target=trainer_proc, args=(t, world, port, plan_name, addrs, tmp, b)))
            procs[-1].start()
            tconns.append(a)
        prev, bridged = 0, 0
        for v in versions:
            for c in rconns:
                assert recv(c, "receiver")[1:3] == (rconns.index(c), v)
            for c in tconns:
                c.send(("push", v))
            pushed = [recv(c, "trainer") for c in tconns]
            sent = sum(m[3] for m in pushed)
            deltas = sum(m[4] for m in pushed)
            bridged = pushed[0][6]
            if v in DENSE or v == DELTA[0]:
                assert sent - prev == plan.total_bytes and deltas == 0, (v, sent - prev, plan.total_bytes, deltas)
            else:
                assert deltas > 0 and sent - prev < plan.total_bytes / 4, (v, sent - prev, plan.total_bytes, deltas)
            prev = 0 if v == DENSE[-1] else sent  # the delta trainer's counters start again
            for c in rconns:
                c.send(("check", v, pushed[0][5]))
            for c in rconns:
                _, r, vv, complete, bad, written, first, rdeltas = recv(c, "receiver")
                assert complete >= v and bad == 0, f"{plan_name} v{v}: {bad} bytes differ; receiver {r}: {first}"
                assert written == plan._p.receiver(r)[2], (r, written, plan._p.receiver(r)[2])
                total += written
        for c in tconns:
            c.send(("quit",))
        done = True
    finally:
        for pr in procs:
            pr.join(30 if done else 0)
            if pr.is_alive():
                pr.kill()
                pr.join()
        shutil.rmtree(tmp, ignore_errors=True)
    assert all(pr.exitcode == 0 for pr in procs), f"{plan_name}: exit codes {[pr.exitcode for pr in procs]}"
    how = f"; {bridged} tensors over the versions also exported by Megatron-Bridge, bit-equal" if bridged else \
        "; HF weights by the test's own conversion" + (" (Megatron-Bridge 0.3.1 cannot export these)" if bridge_on()
                                                        else " (REFIT_MEGATRON_BRIDGE=0)")
    pushes = f"{len(DENSE)} dense versions, then {len(DELTA)} from a delta trainer" if lay["delta"] else \
        f"{len(DENSE)} dense versions; no delta pushes: the plan has no patch areas (delta = {{ budget = B }})"
    print(f"megatron: {plan_name} tp {lay['tp']} pp {lay['pp']} ep {lay['ep']}: {total} bytes equal ({pushes}{how})",
          flush=True)


if __name__ == "__main__":
    names = sys.argv[1:] or [p for p in refit.plans() if p.startswith("megatron_")]
    if not names:
        print("FAIL megatron: this librefit.so carries no megatron_* plan (./configure --plans)")
    failed = 0 if names else 1
    for name in names:
        try:
            run(name)
        except Exception:
            failed += 1
            print(f"FAIL megatron: {name}\n{traceback.format_exc()}", flush=True)
    print(f"{len(names) - failed if names else 0} passed, {failed} failed")
    sys.exit(1 if failed else 0)
