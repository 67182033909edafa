"""NCCL broadcast of N bytes from GPU a to GPU b (torch.distributed, two processes), the peer that
bench_gpu.c compares refit against. Prints 'nccl_gbps X' (bytes broadcast per second, 1e9)."""
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, total, devs, port, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(devs[rank])
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=torch.device("cuda", devs[rank]))
    chunk = 1 << 30
    buf = torch.empty(min(total, chunk), dtype=torch.uint8, device="cuda")
    best = 0.0
    for _ in range(3):
        dist.barrier()
        torch.cuda.synchronize()
        t = time.perf_counter()
        done = 0
        while done < total:
            n = min(chunk, total - done)
            dist.broadcast(buf[:n], src=0)
            done += n
        torch.cuda.synchronize()
        dist.barrier()
        best = max(best, total / (time.perf_counter() - t) / 1e9)
    if rank == 0:
        q.put(best)
    dist.destroy_process_group()


if __name__ == "__main__":
    total, a, b = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    mp.spawn(worker, args=(total, [a, b], 29500 + os.getpid() % 1000, q), nprocs=2, join=True)
    print(f"nccl_gbps {q.get():.2f}")
