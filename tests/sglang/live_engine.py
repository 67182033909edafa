#!/usr/bin/env python
"""live_engine.py: refit.sglang against a real SGLang 0.5.23 engine on this machine's CPU (opt-in).

Starts sglang.Engine(device="cpu") on a tiny Qwen3 bf16 checkpoint (mkdumps.sh makes one under
$TMPDIR/refit-sglang-dumps/ckpt/qwen3) with refit's custom weight loader, then calls
refit.sglang.bind: the command reaches the TP worker through update_weights_from_tensor inside a
begin/end session, EngineView.from_model reads the live model and SGLang's runtime context there,
and the binding is refused by name (the sglang profile covers SM90; SGLang on a CPU is another
kernel path, which no dump covers). Exits 0 when that refusal came back and the session was closed
again (a new begin/end succeeds), else 1.

    SGLANG_USE_CPU_ENGINE=1 LD_LIBRARY_PATH=<dir with libcuda.so.1 -> CUDA's stub> \\
        PYTHONPATH=build/python $SGLANG_PYTHON tests/sglang/live_engine.py CKPT_DIR
"""
import os
import sys
import tempfile

os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")


def main():
    import sglang
    import refit
    import refit.sglang
    eng = sglang.Engine(model_path=sys.argv[1], device="cpu", skip_tokenizer_init=True, tp_size=1, dtype="bfloat16",
                        disable_cuda_graph=True, mem_fraction_static=0.3, context_length=256, max_total_tokens=2048,
                        max_running_requests=4, attention_backend="torch_native",
                        custom_weight_loader=[refit.sglang.HOOK])
    ok = False
    try:
        try:
            refit.sglang.bind(eng, "sglang_qwen3_bf16_tp1", 0x5EC2E7, info_dir=tempfile.mkdtemp(), tp_size=1,
                              host="127.0.0.1", ucx_tls="tcp")
            print("bound: not expected on a CPU")
        except refit.sglang.Refused as e:
            print(f"refused ({e.setting}): {e}")
            ok = e.setting == "device capability"
        again = eng.begin_weight_update(), eng.end_weight_update()
        print("session closed again, begin/end ->", again)
        ok = ok and all(r[0] for r in again)
    finally:
        eng.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
