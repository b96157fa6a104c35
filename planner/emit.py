"""Engine command lines for a plan (`planner fit --emit`): only flags the engines have.

llama.cpp: tools/server/README.md and docs/multi-gpu.md (-m, -c, -np, -ngl, -fa, -ctk/-ctv,
-b/-ub, -sm, -ts, --n-cpu-moe, -fit). vLLM: `vllm serve` engine arguments (--tensor-parallel-size,
--pipeline-parallel-size, --max-model-len, --kv-cache-dtype, --gpu-memory-utilization,
--max-num-seqs, --max-num-batched-tokens). SGLang: `python -m sglang.launch_server` server
arguments (--tp-size, --pp-size, --context-length, --kv-cache-dtype, --mem-fraction-static,
--max-running-requests).
"""

from __future__ import annotations

from planner.deployment import Resolved
from planner.errors import PlannerError

FAMILIES = ("llama.cpp", "vllm", "sglang")

# our KV type ids -> the engine's own spelling
_VLLM_KV = {"bf16": "auto", "f16": "auto", "fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}
_SGLANG_KV = {"bf16": "auto", "f16": "auto", "fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}


def command(r: Resolved, family: str, ctx: int) -> str:
    if family not in FAMILIES:
        raise PlannerError(f"--emit {family!r}: choose one of {', '.join(FAMILIES)}")
    if r.engine.family != family:
        hint = {"llama.cpp": "llama.cpp-cuda", "vllm": "vllm-cuda", "sglang": "sglang-cuda"}[family]
        raise PlannerError(f"this plan is for {r.engine.id}; plan for {family} first, e.g. --engine {hint}")
    return {"llama.cpp": _llamacpp, "vllm": _vllm, "sglang": _sglang}[family](r, ctx)


def _llamacpp(r: Resolved, ctx: int) -> str:
    n = r.arch.n_layers
    model = f"{r.model_name}-{r.quant}.gguf" if not r.exact_weights else f"{r.model_id}.gguf"
    a = ["llama-server", "-m", model, "-c", str(ctx * r.batch)]  # -c is shared by the -np slots
    if r.batch > 1:
        a += ["-np", str(r.batch)]
    a += ["-ngl", "all" if r.gpu_layers >= n else str(r.gpu_layers)]
    a += ["-fa", "on" if r.flash_attention else "off"]
    if r.kv_quant != "f16":
        a += ["-ctk", r.kv_quant, "-ctv", r.kv_quant]
    if r.ubatch_tokens != r.engine.memory.default_ubatch_tokens:
        a += ["-ub", str(r.ubatch_tokens), "-b", str(max(r.ubatch_tokens, r.engine.memory.default_batch_tokens))]
    if r.cpu_moe_layers:
        a += ["--n-cpu-moe", str(r.cpu_moe_layers)]
    if len(r.gpus) > 1:
        a += ["-sm", r.split]
        if r.tensor_split:
            a += ["-ts", ",".join(f"{x / sum(r.tensor_split) * 100:.0f}" for x in r.tensor_split)]
        if r.split == "tensor":
            a += ["-fit", "off"]  # auto-fit is not supported with --split-mode tensor
    return " ".join(a)


def _vllm(r: Resolved, ctx: int) -> str:
    a = ["vllm", "serve", r.hf_repo or r.model_name]
    n = len(r.gpus)
    if n > 1:
        a += ["--tensor-parallel-size" if r.split == "tensor" else "--pipeline-parallel-size", str(n)]
    a += ["--max-model-len", str(ctx)]
    kv = _VLLM_KV.get(r.kv_quant, r.kv_quant)
    if kv != "auto":
        a += ["--kv-cache-dtype", kv]
    if r.quant == "fp8":
        a += ["--quantization", "fp8"]
    a += ["--gpu-memory-utilization", f"{r.engine.memory.gpu_memory_utilization.value:g}"]
    a += ["--max-num-seqs", str(r.batch)]
    if r.ubatch_tokens != r.engine.memory.default_ubatch_tokens:
        a += ["--max-num-batched-tokens", str(r.ubatch_tokens)]
    return " ".join(a)


def _sglang(r: Resolved, ctx: int) -> str:
    a = ["python", "-m", "sglang.launch_server", "--model-path", r.hf_repo or r.model_name]
    n = len(r.gpus)
    if n > 1:
        a += ["--tp-size" if r.split == "tensor" else "--pp-size", str(n)]
    a += ["--context-length", str(ctx)]
    kv = _SGLANG_KV.get(r.kv_quant, r.kv_quant)
    if kv != "auto":
        a += ["--kv-cache-dtype", kv]
    if r.quant == "fp8":
        a += ["--quantization", "fp8"]
    if r.engine.memory.gpu_memory_utilization:
        a += ["--mem-fraction-static", f"{r.engine.memory.gpu_memory_utilization.value:g}"]
    a += ["--max-running-requests", str(r.batch)]
    return " ".join(a)
