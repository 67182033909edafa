"""examples/receiver.py: one refit receiver. Fresh host (numpy) or CUDA (torch, --cuda) buffers
stand in for an inference engine's weights; an engine binds its own parameters instead.

    python examples/receiver.py qwen3_tiny_tp2 0 --port 29600 --versions 3
Start one per receiver index (python -c 'import refit; print(refit.Plan("qwen3_tiny_tp2").receivers)'),
then the trainers (examples/trainer.py). Needs PYTHONPATH=build/python (ninja python) or pip install .
"""
import argparse

import refit

ap = argparse.ArgumentParser()
ap.add_argument("plan")
ap.add_argument("index", type=int, help="receiver index: replica * GPUs per replica + position")
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--versions", type=int, default=3)
ap.add_argument("--token", type=int, default=0x5EC2E7, help="shared secret of trainers and receivers")
ap.add_argument("--cuda", action="store_true", help="tensors and engine on the current CUDA device")
args = ap.parse_args()

plan = refit.Plan(args.plan)
rx = refit.Receiver(plan, args.index, token=args.token, mem="cuda" if args.cuda else "host")
# {name: tensor} with the names, dtypes and shapes the plan gives this engine GPU (rx.tensors)
weights = {name: info.empty(device="cuda" if args.cuda else None) for name, info in rx.tensors.items()}
rx.bind(weights)                       # checked: dtype, shape, contiguity, device
port = rx.listen(args.host, args.port)
print(f"receiver {args.index} of {plan.name} listening on {args.host}:{port}", flush=True)
for v in range(1, args.versions + 1):
    # a serving engine pauses generation here, then lets the trainers write version v
    rx.arm(v)
    state = rx.wait(v)                 # every byte arrived; raises refit.TornError with the reason
    print(f"version {state.complete} complete ({rx.counters()['bytes']} bytes so far)", flush=True)
rx.close()
