"""real_trainer.py: the trainer side of tests/test_vllm_real.sh, one process per FSDP2 rank (torchrun).

    torchrun --nproc-per-node 2 tests/vllm/real_trainer.py PLAN HOST:PORT CKPT_V1 CKPT_V2 ...

Each rank builds the checkpoint's transformers model with fp32 masters, shards it with FSDP2 over
gloo, binds it through refit.Trainer (delta pushes on) and connects to the receiver; then for every
checkpoint in turn loads its weights into the same sharded parameters and pushes it as version
1, 2, ... (a push writes once the receiver arms its version). Rank 0 prints one line per version
with the counters that say whether it went dense or as patches.
"""
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor
from transformers import AutoModelForCausalLM

import refit

plan_name, addr, ckpts = sys.argv[1], sys.argv[2], sys.argv[3:]
host, port = addr.rsplit(":", 1)
dist.init_process_group("gloo")
plan = refit.Plan(plan_name)
mesh = init_device_mesh("cpu", (plan.fsdp,), mesh_dim_names=("shard",))
model = AutoModelForCausalLM.from_pretrained(ckpts[0], dtype=torch.float32)  # fp32 masters
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
trainer = refit.Trainer(plan, mesh=mesh, token=0x5EC2E7, mem="host", delta=True)
trainer.bind_module(model)
for r in trainer.receivers:
    trainer.connect(r, host, int(port))
for v, ckpt in enumerate(ckpts, 1):
    if v > 1:  # the next checkpoint into the same (sharded) parameters
        full = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).state_dict()
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(distribute_tensor(full[name], p.device_mesh, p.placements))
    trainer.refresh_gathered()
    before = trainer.counters()
    trainer.push(v)
    trainer.wait()
    c = trainer.counters()
    if dist.get_rank() == 0:
        print(f"trainer: version {v} pushed ({ckpt}): deltas {c['deltas'] - before['deltas']}, "
              f"patch bytes {c['patch_bytes'] - before['patch_bytes']}", flush=True)
trainer.close()
dist.destroy_process_group()
