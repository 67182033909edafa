"""examples/receiver.py: one refit receiver. Fresh host (numpy) or CUDA (torch, --cuda) tensors laid
out as vLLM holds them (Plan.engine_tensors) stand in for an inference engine's weights; an engine
binds its own parameters instead (refit.vllm does it for vLLM).

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
# {name: tensor} as the engine holds them on this GPU: names and aliases, MLA views in their storage
weights = plan.engine_tensors(args.index, device="cuda" if args.cuda else None)
left = rx.bind(weights)                # checked: dtype, shape, strides, device, aliases, views
assert not left, f"not bound: {left}"
port = rx.listen(args.host, args.port)
print(f"receiver {args.index} of {plan.name} listening on {args.host}:{port}", flush=True)
version = 1
while version <= args.versions:
    # a serving engine pauses generation here: from arm on, the trainers write version
    rx.arm(version)
    try:
        state = rx.wait(version)       # every byte arrived, derived tensors rebuilt
        print(f"version {state.complete} complete ({rx.counters()['bytes']} bytes so far)", flush=True)
        # ... and resumes generation here
    except refit.TornError as e:       # the weights are undefined until a later version completes
        print(f"version {e.version} torn: {e.reason}; arming the next", flush=True)
    version += 1
rx.close()
