"""tests/pip_smoke.py PLANS: the refit module as `pip install .` installed it (run from outside the
source tree by tests/test_pip_install.sh). Checks that it is the installed copy with its own
librefit.so, that it carries exactly the plans configure chose (PLANS, space-separated), and one
loopback push of qwen3_tiny_tp2 in this process: 2 trainers and 4 receivers over TCP on 127.0.0.1,
every receiver's version 1 complete with the table's byte count, and model.norm.weight (bf16, sent
whole by trainer 0) arrived bit for bit. Prints ok/FAIL lines and 'N passed, N failed'."""
import os
import sys

import numpy as np

import refit

passed = failed = 0


def check(ok, what):
    global passed, failed
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    passed, failed = passed + bool(ok), failed + (not ok)


here = os.path.dirname(refit.__file__)
check(here.startswith(sys.prefix) and "site-packages" in here, f"refit imported from the venv: {here}")
check(os.path.exists(os.path.join(here, "librefit.so")), "librefit.so installed beside the module")
want = sorted(sys.argv[1].split())
check(sorted(refit.plans()) == want, f"refit.plans() is configure's plan set ({len(want)} plans)")

plan = refit.Plan("qwen3_tiny_tp2")
token = 0x5EC2E7
rxs, tensors = [], {}
for r in range(plan.receivers):
    rx = refit.Receiver(plan, r, token=token, ucx_tls="tcp", timeout_ms=60000)
    tensors[r] = plan.engine_tensors(r)
    for t in tensors[r].values():
        t.view(np.uint8)[...] = 0xFF
    assert rx.bind(tensors[r]) == []
    rxs.append((rx, rx.listen("127.0.0.1")))
rng = np.random.default_rng(1)
trs, norm = [], None
for rank in range(plan.trainers):
    tr = refit.Trainer(plan, rank, token=token, ucx_tls="tcp", timeout_ms=60000, progress_thread=True)
    for n, i in tr.sources.items():
        t = i.empty()
        t.view(np.uint16 if t.dtype.itemsize == 2 else np.uint8)[...] = rng.integers(0, 0x7F00, t.shape)
        tr.bind(n, t, row0=i.row0)
        if n == "model.norm.weight" and i.bytes:
            norm = t
    for r in tr.receivers:
        tr.connect(r, "127.0.0.1", rxs[r][1])
    trs.append(tr)
for rx, _ in rxs:
    rx.arm(1)
for tr in trs:
    tr.push(1)
for tr in trs:
    check(tr.wait(timeout=120) == [], f"trainer {tr.rank}: version 1 acknowledged by every receiver")
for r, (rx, _) in enumerate(rxs):
    st = rx.wait(1, timeout=120)
    c = rx.counters()
    check(st.complete == 1 and c["bytes"] == plan._p.receiver(r)[2],
          f"receiver {r}: version {st.complete} complete, {c['bytes']} bytes (table: {plan._p.receiver(r)[2]})")
    got = tensors[r]["model.norm.weight"]
    check(norm is not None and got.tobytes() == norm.tobytes(), f"receiver {r}: model.norm.weight bit for bit")
for tr in trs:
    tr.close()
for rx, _ in rxs:
    rx.close()
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
