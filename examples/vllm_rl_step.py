"""examples/vllm_rl_step.py: one RL step with vLLM and refit, driven from one process.

    python examples/vllm_rl_step.py vllm_qwen3_bf16_tp2 tests/vllm/configs/qwen3

The driver starts vLLM (TP = the plan's, every worker with refit's worker extension) and the FSDP2
trainer ranks (processes, gloo on the CPU here); each vLLM worker binds its model's parameters as
one receiver of the plan and exports a blob, which the trainers import. One step: vLLM generates
rollouts with version 0 (the checkpoint), the trainers take an optimizer step and push version 1,
every worker arms version 1 and waits until it is complete (refit.vllm.update; an AsyncLLM would
pause generation first: refit.vllm.update_async), and vLLM generates with the new weights. The
model directory holds config.json only: vLLM starts from dummy weights, the trainer from its own
random init, and refit's push makes them equal. Needs vllm 0.33, torch, transformers and refit.
"""
import argparse
import multiprocessing as mp
import os

import refit
import refit.vllm

TOKEN = 0x5EC2E7


def trainer(rank, plan_name, config_dir, blobs, port, go, done):
    """one FSDP2 trainer rank: bind the shards, import every receiver's blob, push version 1"""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoConfig, AutoModelForCausalLM

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
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    tr.refresh_gathered()
    tr.push(1)   # each receiver's writes go out once its worker armed version 1
    tr.wait()    # every receiver acknowledged version 1 complete
    done.put(rank)
    tr.close()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("plan")
    ap.add_argument("model_dir", help="a directory with the model's config.json")
    args = ap.parse_args()
    from vllm import LLM, SamplingParams

    plan = refit.Plan(args.plan)
    llm = LLM(args.model_dir, tensor_parallel_size=plan.tp, load_format="dummy", enforce_eager=True,
              worker_extension_cls="refit.vllm.WorkerExtension")
    infos = refit.vllm.bind(llm, plan.name, TOKEN, host="127.0.0.1")  # checks the engine, binds, exports
    blobs = {i["index"]: i["blob"] for i in infos}

    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    ranks = [ctx.Process(target=trainer, args=(r, plan.name, os.path.abspath(args.model_dir), blobs, 29555, go, done))
             for r in range(plan.trainers)]
    for p in ranks:
        p.start()
    prompts, greedy = ["The capital of France is"], SamplingParams(max_tokens=8, temperature=0)
    print("version 0:", llm.generate(prompts, greedy)[0].outputs[0].text)
    go.set()                                # train and push
    refit.vllm.update(llm, 1, timeout=300)  # every worker arms 1, waits until complete (TornError: torn)
    print("version 1:", llm.generate(prompts, greedy)[0].outputs[0].text)
    for p in ranks:
        print(f"trainer rank {done.get(timeout=60)} done")
        p.join()
    llm.collective_rpc("refit_close")


if __name__ == "__main__":
    main()
