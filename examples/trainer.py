"""examples/trainer.py: refit trainer ranks over FSDP2, one process per rank (torchrun).

    torchrun --nproc-per-node 2 examples/trainer.py qwen3_tiny_tp2 CONFIG_DIR \
        --receivers 127.0.0.1:29600,127.0.0.1:29601,127.0.0.1:29602,127.0.0.1:29603
CONFIG_DIR holds the HF config.json of the plan's model (tests/fixtures/hf/models/qwen3_tiny for
this one); --receivers lists host:port by receiver index. GPUs: one per rank (NCCL, CUDA engines);
without GPUs the ranks run on the CPU over gloo. The masters are in the dtype the plan's trainer
section gives (fp32 for most plans, bf16 for this one), experts fused, as FSDP2 over transformers >= 5
holds them. Needs torch and transformers, and the refit module.
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoConfig, AutoModelForCausalLM

import refit

ap = argparse.ArgumentParser()
ap.add_argument("plan")
ap.add_argument("config", help="directory of the HF config.json")
ap.add_argument("--receivers", required=True, help="host:port,... by receiver index")
ap.add_argument("--versions", type=int, default=3)
ap.add_argument("--token", type=int, default=0x5EC2E7)
args = ap.parse_args()
addrs = [a.rsplit(":", 1) for a in args.receivers.split(",")]

cuda = torch.cuda.is_available()
dist.init_process_group("nccl" if cuda else "gloo")
if cuda:
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
plan = refit.Plan(args.plan)
hsdp = plan.dp_replicate > 1  # HSDP: a 2-D mesh (replicate, shard), its dimensions named as FSDP2 wants
mesh = init_device_mesh("cuda" if cuda else "cpu", (plan.dp_replicate, plan.fsdp) if hsdp else (plan.fsdp,),
                        mesh_dim_names=("replicate", "shard") if hsdp else ("shard",))
torch.manual_seed(0)
# the masters in the dtype the plan's trainer section gives its sources (fp32 masters: "float32")
dtype = getattr(torch, plan.source("model.norm.weight").dtype)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config), dtype=dtype)
model.to("cuda" if cuda else "cpu")
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)

trainer = refit.Trainer(plan, mesh=mesh, token=args.token, mem="cuda" if cuda else "host", skip_down=True)
gathered = trainer.bind_module(model)   # FSDP2 shards by name; gathered tensors get persistent buffers
for r in trainer.receivers:
    trainer.connect(r, addrs[r][0], int(addrs[r][1]))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
tokens = torch.randint(0, model.config.vocab_size, (1, 16), device="cuda" if cuda else "cpu")
first = trainer.resume_version          # a restarted trainer continues after the receivers' newest version
for v in range(first, first + args.versions):
    model(input_ids=tokens, labels=tokens).loss.backward()
    opt.step()
    opt.zero_grad()
    trainer.refresh_gathered()          # collective: every rank of the shard group
    trainer.push(v)                     # CUDA: after the current stream's work; writes once receivers arm v
    skipped = trainer.wait()            # receivers that were down and skipped (skip_down), [] when none
    if dist.get_rank() == 0:
        print(f"version {v} pushed ({len(gathered)} gathered sources, skipped receivers {skipped})", flush=True)
trainer.close()
dist.destroy_process_group()
