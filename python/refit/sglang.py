"""refit.sglang: refit receivers inside SGLang 0.5.23's TP workers, driven through its weight-update session.

Enable it in the engine (every TP worker process needs refit installed):

    engine = sglang.Engine(model_path=..., tp_size=2, custom_weight_loader=[refit.sglang.HOOK],
                           disable_shared_experts_fusion=True)   # DeepSeek-V3: see Refused below

then from the driver:

    infos = refit.sglang.bind(engine, "my_plan", token=SECRET, info_dir=DIR)  # per TP worker: index, host, port, blob
    ... trainers import_blob(info["blob"]) (or connect to host:port) and push version v ...
    refit.sglang.update(engine, v)    # pause generation, begin_weight_update, every worker arms v and
                                      # waits until it is complete, end_weight_update, continue generation

Each call reaches every TP worker through SGLang's custom weight loader: update_weights_from_tensor
with load_format=HOOK runs refit.sglang.worker_call(model, named_tensors) inside each TP worker
process, on the model's own parameters; the command travels as the single tensor's name. Workers
answer through files in info_dir (one host). A worker binds the model's parameters by their names
(named_parameters), after Binding has refused, naming the setting, what the tables cannot follow.

SGLang keeps MLA's w_kc / w_vc (DeepSeek-V3, GLM-5) as copies of kv_b_proj that its own
post_load_weights rebuilds. refit's tables do not write them: the plan gives each layer's kv_b_proj
an engine finalize step (sglang_mla_post_load, gen/engine.lua), and the receiver calls the model's
post_load_weights for exactly those layers (weight_names) after the last byte of a version is in and
before the version is complete, so no trainer learns of it earlier and a failure there tears the
version (the session would skip post_load_weights, since the call that armed the version went
through update_weights_from_tensor). end_weight_update then runs process_weights_after_loading, as
the session does for any writer. A torn version leaves the session ended and generation paused: the
weights are undefined until a later version completes.

SGLang's CPU platform (SGLANG_USE_CPU_ENGINE=1, device "cpu") binds bf16 TP1 plans without MLA on a
CPU without AMX (check_cpu; plans with engine.device = "cpu", gen/engine.lua).

The binding is SGLang-free: an EngineView says what a worker holds (name -> tensor with torch's
data_ptr(), shape, stride(), dtype, device, storage_offset(), untyped_storage(), plus the settings
that decide whether the tables can follow the engine); EngineView.from_model reads one inside a live
TP worker. sglang itself is imported only there and by the pause/continue calls.
"""
import base64
import dataclasses
import difflib
import json
import os
import re

import refit
from refit import BindError, TornError

__all__ = ["EngineView", "Binding", "Refused", "PostLoad", "bind", "update", "check_engine", "check_cpu", "select",
           "repacking", "mla_steps", "worker_call", "HOOK", "PROFILE", "MLA_STEP"]

# What the tables' sglang engine profile (gen/engine.lua) covers: the release and kernels whose parameter
# dumps (tests/sglang/dumps, SGLang 0.5.23 on SM90) the destination tables were checked against; and
# SGLang's CPU platform (engine.device = "cpu") on a CPU without AMX, for bf16 TP1 plans without MLA,
# where a real engine was seen to hold the weights as the tables do (tests/test_sglang_engine.sh).
PROFILE = {"version": (0, 5, 23), "sm": 9, "moe_runner_backend": "triton"}

HOOK = "refit.sglang.worker_call"  # --custom-weight-loader entry and load_format of every call
MLA_STEP = "sglang_mla_post_load"  # the engine finalize step of each MLA layer's kv_b_proj (gen/engine.lua)
_CMD = "refit.sglang:"  # prefix of the command tensor's name


class Refused(BindError):
    """An SGLang setting the plan's tables cannot follow; .setting names it."""

    def __init__(self, setting, why):
        super().__init__(f"SGLang {setting}: {why}")
        self.setting = setting


@dataclasses.dataclass
class EngineView:
    """What one SGLang TP worker holds, as the binding reads it. tensors: the model's
    named_parameters(remove_duplicate=False). mla_derived: attributes the model's post_load_weights
    rebuilds (w_kc, w_vc). repacking: {module: quant method class} for modules whose quant method
    restores or repacks weights around an update (restore_weights_before_loading). The defaults are
    an SGLang 0.5.23 TP worker on an H100/H200 with the profile's settings."""
    tensors: dict
    version: str = "0.5.23"
    device_capability: tuple = (9, 0)  # None: not a CUDA device
    device: str = "cuda:0"
    platform: str = "cuda"  # "cpu": SGLang's CPU platform (SGLANG_USE_CPU_ENGINE=1, device "cpu")
    cpu_amx: bool = False  # on the CPU platform: the CPU has AMX (SGLang's cpu_has_amx_support())
    tp_size: int = 1
    tp_rank: int = 0
    ep_size: int = 1  # 1: experts split by TP
    ep_rank: int = 0
    dp_size: int = 1
    enable_eplb: bool = False
    ep_num_redundant_experts: int = 0
    moe_runner_backend: str = "triton"  # read only for models with experts ("auto" is refused: say triton)
    deepgemm_scale_ue8m0: bool = False
    shared_experts_fused: int = 0  # shared experts SGLang appended to the routed experts' tensors
    repacking: dict = dataclasses.field(default_factory=dict)
    mla_derived: tuple = ()
    weight_cache_mode: str = "off"
    memory_saver: bool = False

    @classmethod
    def from_model(cls, model):
        """The view of the model inside a live SGLang (0.5.23) TP worker (worker_call's model)."""
        import torch
        import sglang
        from sglang.srt.runtime_context import get_parallel, get_server_args
        par, sa = get_parallel(), get_server_args()
        tensors = dict(model.named_parameters(remove_duplicate=False))
        derived = []
        for name, m in model.named_modules():
            for a in ("w_kc", "w_vc"):
                if isinstance(getattr(m, a, None), torch.Tensor):
                    derived.append(f"{name}.{a}")
        repack = repacking(model.named_modules())
        from sglang.srt.layers import deep_gemm_wrapper
        ue8m0 = bool(deep_gemm_wrapper.DEEPGEMM_SCALE_UE8M0)
        dev = next(iter(tensors.values())).device
        from sglang.srt.utils import common as sgl_common
        platform = "cpu" if dev.type == "cpu" and sgl_common.is_cpu() else "cuda"
        amx = platform == "cpu" and bool(sgl_common.cpu_has_amx_support())
        return cls(
            tensors=tensors, version=sglang.__version__,
            device_capability=tuple(torch.cuda.get_device_capability(dev)) if dev.type == "cuda" else None,
            device=str(dev), platform=platform, cpu_amx=amx, tp_size=par.tp_size, tp_rank=par.tp_rank, ep_size=par.moe_ep_size,
            ep_rank=par.moe_ep_rank,
            dp_size=int(sa.dp_size),
            enable_eplb=bool(getattr(sa, "enable_eplb", False)),
            ep_num_redundant_experts=int(getattr(sa, "ep_num_redundant_experts", 0) or 0),
            moe_runner_backend=str(getattr(sa, "moe_runner_backend", "auto")), deepgemm_scale_ue8m0=ue8m0,
            shared_experts_fused=int(getattr(model, "num_fused_shared_experts", 0) or 0), repacking=repack,
            mla_derived=tuple(derived), weight_cache_mode=str(getattr(sa, "weight_cache_mode", "off") or "off"),
            memory_saver=bool(getattr(sa, "enable_memory_saver", False)))


# Quant methods that override restore_weights_before_loading but repack only in one configuration:
# {class name: the attribute that says so}. SGLang 0.5.23's UnquantizedFusedMoEMethod (every bf16 MoE
# layer) restores only when it runs FlashInfer's TRT-LLM MoE (layers/quantization/unquant.py).
_REPACKS_WHEN = {"UnquantizedFusedMoEMethod": "use_flashinfer_trtllm_moe"}


def repacking(named_modules):
    """{module name: quant method class name} of the modules whose quant method repacks its weights
    after loading and restores them for an update (restore_weights_before_loading other than the
    base classes' no-op; a method of _REPACKS_WHEN only when its attribute is true)"""
    out = {}
    for name, m in named_modules:
        qm = getattr(m, "quant_method", None)
        restore = getattr(type(qm), "restore_weights_before_loading", None)
        if restore is None or getattr(restore, "__qualname__", "").split(".")[0] in (
                "QuantizeMethodBase", "LinearMethodBase", "FusedMoEMethodBase"):
            continue
        flag = _REPACKS_WHEN.get(type(qm).__name__)
        if flag is None or getattr(qm, flag, True):
            out[name] = type(qm).__name__
    return out


def _version(s):
    return tuple(int(x) for x in re.findall(r"\d+", s)[:3])


def check_engine(plan, view):
    """Refuse, naming the setting, what the plan's static tables cannot follow in this SGLang worker."""
    v = PROFILE["version"]
    if _version(view.version) != v:
        raise Refused("version", f"{view.version}; the tables of plan '{plan.name}' follow the sglang profile, which "
                      f"covers {'.'.join(map(str, v))} (parameter dumps of SGLang {'.'.join(map(str, v))} on SM90)")
    cap = view.device_capability
    if view.platform == "cpu":
        check_cpu(plan, view)
    elif cap is None or cap[0] != PROFILE["sm"]:
        raise Refused("device capability", f"{'no CUDA device' if cap is None else 'SM%d%d' % tuple(cap)} ({view.device}); "
                      "the sglang profile covers SM90 (H100/H200): elsewhere SGLang picks other kernels and layouts "
                      "(on SM100 DeepGEMM requantizes FP8 scales to UE8M0 in place)")
    if view.deepgemm_scale_ue8m0:
        raise Refused("DeepGEMM UE8M0 scales", "SGLang requantizes block-FP8 scales to UE8M0 in place after loading "
                      "(DEEPGEMM_SCALE_UE8M0); the tables write the fp32 scales as loaded")
    if plan.scale_fmt != "fp32":
        raise Refused("DeepGEMM UE8M0 scales", f"the engine keeps fp32 block scales as loaded; plan '{plan.name}' "
                      f"writes {plan.scale_fmt} scales (use a plan with scale_fmt = \"fp32\")")
    moe = any(".mlp.experts." in n for n in view.tensors)
    if moe and view.moe_runner_backend != PROFILE["moe_runner_backend"]:
        raise Refused("moe_runner_backend", f"'{view.moe_runner_backend}': the tables hold the experts as the triton "
                      "runner does (w13_weight / w2_weight as loaded); other backends may repack them (serve with "
                      "--moe-runner-backend triton)")
    for name, qm in sorted(view.repacking.items()):
        raise Refused("quantization backend", f"'{name}' runs {qm}, which repacks its weights after loading and "
                      "restores them for an update; the tables write the loaded layout into the packed memory")
    if view.enable_eplb:
        raise Refused("enable_eplb", "EPLB moves experts between ranks at run time; the tables place them statically "
                      "(serve with enable_eplb off)")
    if view.ep_num_redundant_experts:
        raise Refused("ep_num_redundant_experts", f"{view.ep_num_redundant_experts} redundant experts; the tables hold "
                      "each expert once")
    if view.shared_experts_fused:
        raise Refused("shared experts fusion", f"{view.shared_experts_fused} shared expert(s) appended to the routed "
                      "experts' w13_weight / w2_weight; the tables hold them as mlp.shared_experts (serve with "
                      "--disable-shared-experts-fusion)")
    if view.weight_cache_mode != "off":
        raise Refused("weight_cache_mode", f"'{view.weight_cache_mode}': SGLang refuses in-place updates with a "
                      "weight cache")
    if view.memory_saver:
        raise Refused("enable_memory_saver", "release/resume_memory_occupation frees and re-maps the weights: bound "
                      "addresses do not survive it")
    if view.dp_size != 1:
        raise Refused("dp_size", f"{view.dp_size}; the sglang profile covers one data-parallel rank per engine "
                      "(SGLang's own distributed update requires dp_size 1)")
    if view.tp_size != plan.tp:
        raise Refused("tp_size", f"{view.tp_size}; plan '{plan.name}' has tp {plan.tp}")
    if view.ep_size != plan.ep:
        raise Refused("ep_size", f"{view.ep_size}; plan '{plan.name}' has ep {plan.ep}"
                      + (" (experts split by TP)" if plan.ep == 1 else ""))


def check_cpu(plan, view):
    """Refuse, naming the setting, a worker on SGLang's CPU platform the tables cannot follow: a CPU
    with AMX, and plans the sglang profile's CPU platform does not cover (gen/engine.lua, engine.device
    = "cpu": bf16, TP1, no MLA). The plan's tables do not record its engine.device: a bf16 TP1 plan
    without MLA for SGLang on SM90 holds the same tables and binds too."""
    if view.cpu_amx:
        raise Refused("CPU AMX", f"{view.device} has AMX: SGLang 0.5.23 repacks every bf16 linear and MoE weight after "
                      "loading there (layers/quantization/unquant.py:569 and :874, _amx_process_weight_after_loading "
                      "-> layers/amx_utils.py, a new Parameter from sgl_kernel.convert_weight_packed); the tables write "
                      "the loaded layout (the sglang CPU platform covers CPUs without AMX)")
    dsts = plan.destinations(0).values()
    fp8 = [i.name for i in dsts if i.dtype.startswith("float8")]
    if fp8:
        raise Refused("device", f"cpu: plan '{plan.name}' writes FP8 ('{fp8[0]}', ...); SGLang's CPU FP8 linear needs "
                      "AMX and repacks the weights (layers/quantization/fp8.py, Fp8LinearMethod): the sglang CPU "
                      "platform covers bf16 plans")
    mla = [i.name for i in dsts if "kv_a_proj_with_mqa" in i.name] or list(view.mla_derived)
    if mla:
        raise Refused("device", f"cpu: plan '{plan.name}' has MLA ('{mla[0]}', ...); SGLang 0.5.23's CPU attention "
                      "(torch_native) fails on MLA's first prefill: the sglang CPU platform covers models without MLA")
    if plan.tp != 1 or plan.ep != 1:
        raise Refused("device", f"cpu: plan '{plan.name}' has tp {plan.tp} ep {plan.ep}; the sglang CPU platform "
                      "covers TP1 (SGLang's CPU TP2 needs PyNccl disabled; no real engine ran it with refit)")


def select(plan, index, tensors):
    """{name: tensor} of receiver `index` from the worker's parameters: every table tensor by its name.
    Refuses a table tensor the engine lacks, and one the engine holds inside a larger storage."""
    infos = list(plan.destinations(index).values())
    missing = [i.name for i in infos if i.name not in tensors]
    if missing:
        m = missing[0]
        close = difflib.get_close_matches(m, list(tensors), n=1)
        raise BindError(f"{len(missing)} tensor(s) of plan '{plan.name}' (receiver {index}) not among the engine's "
                        f"parameters, e.g. {', '.join(repr(n) for n in missing[:3])}"
                        + (f" (close: {close[0]!r})" if close else ""))
    out = {}
    for info in infos:
        t = out[info.name] = tensors[info.name]
        if info.side != refit._DST:
            continue
        off, nbytes = t.storage_offset(), t.untyped_storage().nbytes()
        if off != 0 or nbytes != info.bytes:
            raise BindError(f"tensor '{info.name}' of plan '{plan.name}' (receiver {index}) is a whole storage of "
                            f"{info.bytes} bytes; the engine's lies at element offset {off} of a storage of {nbytes} "
                            "bytes (another layout than the tables')")
    return out


def mla_steps(plan, index):
    """the destinations (each MLA layer's kv_b_proj) of receiver `index`'s sglang_mla_post_load finalize
    steps, in the order the receiver runs them (the plan's generated finalize table)"""
    return [d for n, d, kind in plan.finalize_steps(index) if kind == "engine" and n == MLA_STEP]


class PostLoad:
    """The finalize hook of an SGLang worker whose model derives MLA's w_kc / w_vc from kv_b_proj
    (Receiver.set_finalize): called as fn(version, steps), steps [(step name, dst name)] the
    receiver's sglang_mla_post_load steps, it runs the model's post_load_weights(is_nextn=False,
    weight_names=[those kv_b_proj names]), which rebuilds exactly those layers (SGLang 0.5.23,
    DeepseekV2WeightLoaderMixin.post_load_weights), on the worker's CUDA device, and waits for its
    work there, so that the version is complete only once w_kc / w_vc hold it. An exception tears
    the version. Its time: Binding.finalize_s()."""

    def __init__(self, post_load_weights, device=None):
        self.post_load_weights, self.device = post_load_weights, device

    def __call__(self, version, steps):
        names = []
        for step, name in steps:
            if step != MLA_STEP:
                raise refit.Error(f"finalize step '{step}' of '{name}' (version {version}): refit.sglang runs only "
                                  f"{MLA_STEP} steps")
            names.append(name)
        if self.device is None:
            self.post_load_weights(is_nextn=False, weight_names=names)
        else:  # the hook may run on the receiver's progress thread: the worker's device, and its work done
            import torch
            with torch.cuda.device(self.device):
                self.post_load_weights(is_nextn=False, weight_names=names)
                torch.cuda.current_stream().synchronize()


class Binding:
    """One TP worker's receiver, bound to the model's own parameters: checks the engine
    (check_engine), selects and binds every tensor of its receiver index, listens (host:port, port
    0 = any) and exports. post_load_weights: the model's (worker_call passes it), needed where the
    plan has sglang_mla_post_load finalize steps (MLA models: w_kc / w_vc), which the receiver then
    runs through PostLoad before each version is complete. options go to refit.Receiver (ucx_tls,
    nic_mode, timeout_ms, ...)."""

    def __init__(self, plan, view, *, token, replica=0, host="0.0.0.0", port=0, post_load_weights=None, **options):
        plan = refit.Plan(plan)
        check_engine(plan, view)
        self.index = plan.receiver_index(replica, view.tp_rank, ep_rank=view.ep_rank if plan.ep > 1 else None)
        steps = mla_steps(plan, self.index)
        derived = ", ".join(view.mla_derived[:2])
        if view.mla_derived and not steps:
            raise Refused("post_load_weights", f"the model derives {derived} ... from kv_b_proj after loading; receiver "
                          f"{self.index} of plan '{plan.name}' has no {MLA_STEP} finalize step to rebuild them (tables "
                          "generated before the sglang profile had it?)")
        if steps and post_load_weights is None:
            raise Refused("post_load_weights", f"the model derives {derived or 'w_kc / w_vc'} ... from kv_b_proj after "
                          f"loading; the tables do not write them: the {MLA_STEP} finalize steps of plan "
                          f"'{plan.name}' ('{steps[0]}', ...) need the model's post_load_weights")
        tensors = select(plan, self.index, view.tensors)
        cuda = view.device.startswith("cuda")
        self.finalize = PostLoad(post_load_weights, view.device if cuda else None) if steps else None
        self.rx = refit.Receiver(plan, self.index, token=token, mem="cuda" if cuda else "host",
                                 device=int(view.device.partition(":")[2] or 0) if cuda else None, **options)
        try:
            left = self.rx.bind(tensors)
            if left:
                raise BindError(f"receiver {self.index} of plan '{plan.name}': not bound: {', '.join(left[:5])}")
            if self.finalize is not None:  # the receiver runs it before the version is complete
                self.rx.set_finalize(self.finalize)
            self.host, self.port = host, self.rx.listen(host, port)
            self.blob = self.rx.export()
        except BaseException:
            self.rx.close()
            raise

    def info(self):
        """What trainers need: {index, host, port, blob} (blob: for Trainer.import_blob)"""
        return {"index": self.index, "host": self.host, "port": self.port, "blob": self.blob}

    def update(self, version, timeout=None):
        """The engine stopped reading its weights: arm version and wait until it is complete
        (VersionState; with MLA the receiver ran post_load_weights before that), or raise
        TornError (the weights are undefined until a later version completes; a failing
        post_load_weights tears it) or TimeoutError."""
        self.rx.arm(version)
        return self.rx.wait(version, timeout)

    def finalize_s(self):
        """seconds the receiver spent in the last complete version's finalize steps (None without steps)"""
        return self.rx.counters()["last_finalize_ns"] / 1e9 if self.finalize is not None else None

    def close(self):
        self.rx.close()


# ---------------------------------------------------------------------------------------------
# inside each TP worker: the custom weight loader

_binding = None  # this worker process's Binding


def _view_of(model):
    # a stand-in model (tests) carries its own view
    return model.refit_view() if hasattr(model, "refit_view") else EngineView.from_model(model)


def _write(path, obj):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def worker_call(model, named_tensors):
    """SGLang's custom weight loader (HOOK), run in every TP worker by update_weights_from_tensor:
    one command tensor named refit.sglang:{json}: op bind (plan, token, replica, host, port, options),
    update (version, timeout) or close; the answer goes to info_dir/<op>.<tp_rank>.json."""
    global _binding
    (name, _), = list(named_tensors)
    if not name.startswith(_CMD):
        raise refit.Error(f"refit.sglang.worker_call: '{name}' is not a refit command (load_format {HOOK} carries "
                          "only refit.sglang.bind / update)")
    cmd = json.loads(name[len(_CMD):])
    view = _view_of(model)
    out = {"tp_rank": view.tp_rank, "op": cmd["op"]}
    try:
        if cmd["op"] == "bind":
            if _binding is not None:
                _binding.close()
                _binding = None
            _binding = Binding(cmd["plan"], view, token=cmd["token"], replica=cmd["replica"], host=cmd["host"],
                               port=cmd["port"], post_load_weights=getattr(model, "post_load_weights", None),
                               **cmd["options"])
            out.update(_binding.info())
            out["blob"] = base64.b64encode(out["blob"]).decode()
        elif _binding is None:
            raise refit.Error("no refit binding in this SGLang worker: call refit.sglang.bind first")
        elif cmd["op"] == "update":
            out.update(index=_binding.index, version=cmd["version"], torn=None, timeout=None)
            try:
                _binding.update(cmd["version"], cmd["timeout"])
            except TornError as e:
                out["torn"] = e.reason or str(e)
            except refit.TimeoutError as e:
                out["timeout"] = str(e)
            out["complete"] = _binding.rx.poll().complete
            out["finalize_s"] = _binding.finalize_s() if out["complete"] == cmd["version"] else None
        elif cmd["op"] == "close":
            _binding.close()
            _binding = None
    except Exception as e:  # the driver raises it: SGLang would only log a loader's exception
        out["error"] = f"{type(e).__name__}: {e}"
        out["refused"] = getattr(e, "setting", None)
    _write(os.path.join(cmd["info_dir"], f"{cmd['op']}.{view.tp_rank}.json"), out)


# ---------------------------------------------------------------------------------------------
# the driver: an sglang.Engine (or anything with its weight-update calls)

def _command_tensor():
    return refit._torch().zeros(1)  # the payload SGLang forwards with the command's name


def _call(engine, info_dir, tp_size, op, **args):
    """run op in every TP worker inside one weight-update session; each worker's answer"""
    for r in range(tp_size):
        p = os.path.join(info_dir, f"{op}.{r}.json")
        if os.path.exists(p):
            os.remove(p)
    name = _CMD + json.dumps(dict(args, op=op, info_dir=info_dir), sort_keys=True)
    ok, msg = engine.update_weights_from_tensor([(name, _command_tensor())], load_format=HOOK)[:2]
    if not ok:
        raise refit.Error(f"refit.sglang {op}: SGLang's update_weights_from_tensor failed: {msg}")
    outs = []
    for r in range(tp_size):
        p = os.path.join(info_dir, f"{op}.{r}.json")
        if not os.path.exists(p):
            raise refit.Error(f"refit.sglang {op}: TP worker {r} did not answer in {info_dir} (is {HOOK} in the "
                              "engine's --custom-weight-loader?)")
        with open(p) as f:
            outs.append(json.load(f))
    for o in outs:
        if o.get("error"):
            if o.get("refused"):
                e = Refused(o["refused"], "")
                e.args = (f"TP worker {o['tp_rank']}: {o['error']}",)
                raise e
            raise BindError(f"TP worker {o['tp_rank']}: {o['error']}")
    return outs


def _session(engine, ok_msg, what):
    ok, msg = ok_msg[:2]
    if not ok:
        raise refit.Error(f"refit.sglang: SGLang's {what} failed: {msg}")


def _pause(engine, mode):
    if hasattr(engine, "pause_generation"):
        return engine.pause_generation(mode=mode)
    from sglang.srt.managers.io_struct import PauseGenerationReqInput  # the offline Engine has no wrapper
    engine.loop.run_until_complete(engine.tokenizer_manager.pause_generation(PauseGenerationReqInput(mode=mode)))


def _continue(engine):
    if hasattr(engine, "continue_generation"):
        return engine.continue_generation()
    from sglang.srt.managers.io_struct import ContinueGenerationReqInput
    engine.loop.run_until_complete(engine.tokenizer_manager.continue_generation(ContinueGenerationReqInput()))


def bind(engine, plan, token, *, info_dir, tp_size, replica=0, host="0.0.0.0", port=0, **options):
    """Bind every TP worker of engine (its --custom-weight-loader lists HOOK) to its receiver of plan;
    returns each worker's info, in TP rank order. info_dir: a directory every worker and the driver
    see (one host)."""
    _session(engine, engine.begin_weight_update(), "begin_weight_update")
    try:
        outs = _call(engine, info_dir, tp_size, "bind", plan=refit.Plan(plan).name, token=token, replica=replica,
                     host=host, port=port, options=options)
    finally:
        _session(engine, engine.end_weight_update(), "end_weight_update")
    return [{"index": o["index"], "host": o["host"], "port": o["port"], "blob": base64.b64decode(o["blob"])}
            for o in outs]


def update(engine, version, *, info_dir, tp_size, timeout=None, mode="retract"):
    """One update: pause generation (mode: SGLang's 'retract', 'in_place' or 'abort'),
    begin_weight_update, every worker arms version and waits until it is complete (with MLA its
    receiver ran the model's post_load_weights for the plan's layers before that),
    end_weight_update (SGLang's process_weights_after_loading), continue generation. Raises
    TornError naming each receiver whose version tore (a failing post_load_weights tears it), else
    TimeoutError naming those not complete in time, with generation still paused (the weights are
    undefined until a later version completes); returns each worker's outcome: {tp_rank, op, index,
    version, complete, torn, timeout, finalize_s} (finalize_s: seconds of this version's
    post_load_weights on that worker, None without MLA)."""
    _pause(engine, mode)
    _session(engine, engine.begin_weight_update(), "begin_weight_update")
    try:
        outs = _call(engine, info_dir, tp_size, "update", version=version, timeout=timeout)
    finally:
        _session(engine, engine.end_weight_update(), "end_weight_update")
    for key, cls, what in (("torn", TornError, "torn"), ("timeout", refit.TimeoutError, "not complete")):
        bad = [o for o in outs if o[key] is not None]
        if bad:
            e = cls(f"version {version} {what} on receiver(s) " + "; ".join(f"{o['index']}: {o[key]}" for o in bad))
            e.version, e.reason = version, "; ".join(o[key] for o in bad)
            raise e
    _continue(engine)
    return outs
