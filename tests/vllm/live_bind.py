#!/usr/bin/env python
"""live_bind.py: refit.vllm against a model real vLLM (0.33) builds, on a machine without a GPU.

Builds a model as dump_params.py does (fake SM90 through fakecuda.py, tensors in CPU memory, dummy
weights, the MTP drafter through EagleProposer with --mtp), then reads it as a worker extension does
(EngineView.from_worker on a stand-in worker: get_model, get_draft_model, vllm_config, device) and
binds it through refit.vllm.Binding (a host receiver: the engine's CPU memory; the device capability
is fakecuda's). Prints what it read and bound, or the refusal. Opt-in, like mkdumps.sh:

    LD_LIBRARY_PATH=$CUDA_STUB_DIR PYTHONPATH=build/python $VLLM_PYTHON tests/vllm/live_bind.py \\
        tests/vllm/configs/dsv3 vllm_dsv3_fp8_tp1 --fp8 --mtp 1
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("plan")
    ap.add_argument("--fp8", action="store_true")
    ap.add_argument("--mtp", type=int, default=0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="refit-live-")
    model_dir = os.path.join(tmp, "model")
    shutil.copytree(args.config_dir, model_dir)
    if args.fp8:
        cfg = json.load(open(os.path.join(model_dir, "config.json")))
        cfg["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128],
                                      "activation_scheme": "dynamic"}
        json.dump(cfg, open(os.path.join(model_dir, "config.json"), "w"))
    os.environ["FAKE_CUDA_CAP"] = "9.0"
    sys.path.insert(0, HERE)
    import fakecuda  # noqa: F401  (before vllm)
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader import get_model

    import refit.vllm
    kw = dict(model=model_dir, load_format="dummy", enforce_eager=True, skip_tokenizer_init=True, max_model_len=256,
              max_num_seqs=4, dtype="bfloat16")
    if args.mtp:
        kw["speculative_config"] = {"method": "mtp", "num_speculative_tokens": args.mtp}
    vc = EngineArgs(**kw).create_engine_config()
    vc.load_config.device = "cpu"
    with set_current_vllm_config(vc):
        init_distributed_environment(1, 0, "file://" + os.path.join(tmp, "init"), 0, "gloo")
        ensure_model_parallel_initialized(1, 1)
        with fakecuda.MetaFallbackMode():
            model = get_model(vllm_config=vc)
            draft = None
            if args.mtp:
                from vllm.v1.spec_decode.eagle import EagleProposer
                prop = EagleProposer(vc, torch.device("cpu"), None)
                prop.load_model(model)
                draft = prop.model

        class Worker:  # what EngineView.from_worker reads of vLLM's GPU worker
            vllm_config, device = vc, torch.device("cpu")

            def get_model(self):
                return model

            def get_draft_model(self):
                return draft

        view = refit.vllm.EngineView.from_worker(Worker())
        print(f"from_worker: {len(view.tensors)} tensors, vLLM {view.version}, tp {view.tp_size} rank {view.tp_rank}, "
              f"ep {view.ep_size}, moe kernels {sorted(set(view.moe_kernels.values()))}, expert maps "
              f"{sorted({(E, tuple(h)) for E, h in view.expert_maps.values()})}, e8m0 {view.deep_gemm_e8m0}")
        view.device_capability = fakecuda_capability()
        b = refit.vllm.Binding(args.plan, view, token=1, host="127.0.0.1", ucx_tls="tcp")
        print(f"bound receiver {b.index} of {args.plan}: {len(b.rx.tensors)} table tensors, blob {len(b.blob)} bytes")
        b.close()
    shutil.rmtree(tmp, ignore_errors=True)


def fakecuda_capability():
    from vllm.platforms import current_platform
    c = current_platform.get_device_capability()
    return (c.major, c.minor)


if __name__ == "__main__":
    main()
