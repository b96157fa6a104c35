"""Engine command lines for a plan (`planner fit --emit`): only flags the engines have.

llama.cpp: tools/server/README.md and docs/multi-gpu.md (-m, -c, -np, -ngl, -fa, -ctk/-ctv,
-b/-ub, -sm, -ts, --n-cpu-moe, -fit). vLLM: `vllm serve` engine arguments (--tensor-parallel-size,
--pipeline-parallel-size, --max-model-len, --kv-cache-dtype, --gpu-memory-utilization,
--max-num-seqs, --max-num-batched-tokens). SGLang: `python -m sglang.launch_server` server
arguments (--tp-size, --pp-size, --context-length, --kv-cache-dtype, --mem-fraction-static,
--max-running-requests, --chunked-prefill-size).

Speculative decoding: llama.cpp --spec-type draft-simple|draft-eagle3|draft-mtp|draft-dflash
(b11434 common/speculative.cpp:74-77), -md, --spec-draft-n-max, -ngld (common/arg.cpp:4150-4274); vLLM --speculative-config
{"method": draft_model|mtp|eagle3|dflash, "model", "num_speculative_tokens"}; SGLang
--speculative-algorithm STANDALONE|NEXTN|EAGLE3|DFLASH with --speculative-draft-model-path,
--speculative-num-steps, --speculative-eagle-topk 1, --speculative-num-draft-tokens.
"""

from __future__ import annotations

import json
import shlex

from planner.deployment import Resolved, default_ubatch, gpus_label
from planner.errors import PlannerError

FAMILIES = ("llama.cpp", "vllm", "sglang", "mlx", "mistralrs", "tabbyapi")

# our KV type ids -> the engine's own spelling
_VLLM_KV = {"bf16": "auto", "f16": "auto", "fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}
_SGLANG_KV = {"bf16": "auto", "f16": "auto", "fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}


def command(r: Resolved, family: str, ctx: int) -> str:
    if family not in FAMILIES:
        raise PlannerError(f"--emit {family!r}: choose one of {', '.join(FAMILIES)}")
    if r.engine.family != {"tabbyapi": "exllama"}.get(family, family):
        hint = {"llama.cpp": "llama.cpp-cuda", "vllm": "vllm-cuda", "sglang": "sglang-cuda", "mlx": "mlx",
                "mistralrs": "mistral.rs", "tabbyapi": "exllamav3"}[family]
        raise PlannerError(f"this plan is for {r.engine.id}; plan for {family} first, e.g. --engine {hint}")
    if family == "mlx":
        return _mlx(r, ctx)
    if family == "mistralrs":
        return _mistralrs(r)
    if family == "tabbyapi":
        return _tabbyapi(r, ctx)
    return _llamacpp(r, ctx) if family == "llama.cpp" else _server(r, ctx, family)


def _mlx(r: Resolved, ctx: int) -> str:
    """mlx_lm.convert the released checkpoint to the planned quant (mlx_lm convert.py:190-232), then serve it with
    mlx_lm.server (server.py:1922-2080): its defaults are the plan's unless the plan differs."""
    from planner.catalog import Catalog

    catalog = Catalog()
    repo = r.hf_repo or r.model_name
    base = catalog.formats.types[catalog.recipe(r.quant, "mlx")[1].base]
    out = []
    path = f"{r.model_name}-{r.quant}".replace(" ", "-")
    conv = ["mlx_lm.convert", "--hf-path", repo, "--mlx-path", path]
    if base.code_bits:  # a quantized recipe: its codes' bits and group (models_db/quant/formats.toml)
        conv += ["-q", "--q-bits", str(base.code_bits), "--q-group-size", str(base.block_weights)]
    out.append(shlex.join(conv))
    a = ["mlx_lm.server", "--model", path]
    if r.batch != r.engine.memory.max_num_seqs:
        a += ["--decode-concurrency", str(r.batch)]
    if r.ubatch_tokens != r.engine.memory.default_ubatch_tokens:
        a += ["--prefill-step-size", str(r.ubatch_tokens)]
    kv = catalog.kv_types.types[r.kv_quant]
    if kv.code_bits:  # mlx_lm's quantized cache (models_db/quant/kv_types.toml)
        a += ["--kv-bits", str(kv.code_bits), "--kv-group-size", str(kv.block_values)]
    s = r.spec
    if s is not None:
        a += ["--draft-model", s.draft.hf_repo or s.draft.model_name, "--num-draft-tokens", str(s.gamma)]
    out.append(shlex.join(a))
    return "\n".join(out)


def _tabbyapi(r: Resolved, ctx: int) -> str:
    """TabbyAPI (common/args.py: every config field as --field-name): download the bitrate's branch of an EXL
    repository (`python main.py download REPO --revision BRANCH`, args.py:65-80; turboderp's repositories keep one
    bitrate per branch, "4.0bpw", "8.0bpw_H8"), then serve it with the plan's context, cache and batch."""
    fmt, _, branch = r.quant.partition("-")  # the recipe is named as the branch: exl3-4.0bpw, exl2-4.65bpw_H8
    name = (r.hf_repo or r.model_name).rpartition("/")[2]
    folder = f"{name}-{fmt}-{branch}"
    out = []
    if fmt == "exl2":
        out.append("# EXL2 needs TabbyAPI 79126f9 or older (its main branch serves EXL3 only)")
    out.append(f"# turboderp's repository naming ({name}-{fmt}); check that it exists, or use another quanter's")
    out.append(shlex.join(["python", "main.py", "download", f"turboderp/{name}-{fmt}", "--revision", branch,
                           "--folder-name", folder]))
    a = ["python", "main.py", "--model-name", folder, "--max-seq-len", str(ctx)]
    pad = r.engine.memory.ctx_padding_tokens  # cache_size is a multiple of the 256-token page (config_models.py:194-202)
    cache = -(-ctx * r.batch // pad) * pad
    if cache != ctx:
        a += ["--cache-size", str(cache)]
    modes = {"f16": "FP16", "q8": "Q8", "q6": "Q6", "q4": "Q4"}
    if r.v_type != r.kv_quant:  # K/V bit pairs (CACHE_TYPE "k,v", config_models.py:13)
        a += ["--cache-mode", f"{r.kv_quant[1:]},{r.v_type[1:] if r.v_type != 'f16' else '16'}"]
    elif r.kv_quant != "f16":
        a += ["--cache-mode", modes[r.kv_quant]]
    if r.ubatch_tokens != r.engine.memory.default_ubatch_tokens:
        a += ["--chunk-size", str(r.ubatch_tokens)]
    if r.batch != r.engine.memory.max_num_seqs:
        a += ["--max-batch-size", str(r.batch)]
    if len(r.gpus) > 1 and r.split == "tensor":
        a += ["--tensor-parallel", "true"]
    out.append(shlex.join(a))
    return "\n".join(out)


def _mistralrs(r: Resolved) -> str:
    """`mistralrs serve` (mistral.rs 0.9.2, mistralrs-cli/src/args): the Hugging Face checkpoint with --isq for an
    isq-* recipe, else the GGUF file with -f. Its KV pool is sized by memory, not by a context flag, so the plan's
    context is not a flag; several GPUs are all the visible ones (NCCL tensor parallel), or a layer split with -n."""
    a = ["mistralrs", "serve"]
    if r.quant.startswith("isq-"):
        a += ["-m", r.hf_repo or r.model_name, "--isq", r.quant[4:]]
    else:
        a += ["-f", f"{r.model_name}-{r.quant}.gguf" if not r.exact_weights else f"{r.model_id}.gguf"]
    if r.kv_quant == "fp8_e4m3":
        a += ["--pa-cache-type", "f8e4m3"]
    m = r.engine.memory
    if m.gpu_memory_utilization and m.gpu_memory_utilization.source == "user":
        a += ["--pa-memory-fraction", f"{m.gpu_memory_utilization.value:g}"]
    if r.batch != m.max_num_seqs:
        a += ["--max-seqs", str(r.batch)]
    if r.ubatch_tokens != m.default_ubatch_tokens:
        a += ["--max-num-batched-tokens", str(r.ubatch_tokens)]
    head = ""
    if len(r.gpus) > 1 and r.split == "layer":  # -n "ORD:LAYERS;..." (args/model.rs:659)
        from planner.memory import stage_layer_counts

        a += ["-n", ";".join(f"{i}:{c}" for i, c in enumerate(stage_layer_counts(r)))]
    elif len(r.gpus) > 1:  # NCCL tensor parallel over every visible GPU (mistralrs-quant/src/distributed/mod.rs:79-105)
        head = "CUDA_VISIBLE_DEVICES=" + ",".join(str(i) for i in range(len(r.gpus))) + " "
    return head + shlex.join(a)


def _gguf_repo(r: Resolved):
    """The first of the catalog model's GGUF repositories that holds the planned quant (-hf REPO:TAG)."""
    from planner.catalog import Catalog

    card = None if r.exact_weights else Catalog().models.get(r.model_id)
    return next(((g.repo, g.tags.get(r.quant, r.quant)) for g in card.gguf_repos if r.quant in g.quants), None) \
        if card else None


def _llamacpp(r: Resolved, ctx: int) -> str:
    n = r.arch.n_layers
    ik = r.engine.id.startswith("ik_llama.cpp")  # the fork's parser: -ngl takes an integer only (common.cpp:2023)
    hf = None if ik else _gguf_repo(r)
    if hf:  # -hf REPO:QUANT (common/arg.cpp:3063): the first file whose path holds the tag (download.cpp:644-688)
        a = ["llama-server", "-hf", f"{hf[0]}:{hf[1]}"]
        if any(t.group == "vision" for t in r.arch.tensors):
            a += ["--no-mmproj"]  # -hf also fetches the projector and loads it on the GPU (arg.cpp:382-401); not planned
    else:
        model = f"{r.model_name}-{r.quant}.gguf" if not r.exact_weights else f"{r.model_id}.gguf"
        a = ["llama-server", "-m", model]
    a += ["-c", str(ctx * r.batch)]  # -c is shared by the -np slots
    if r.batch > 1:
        a += ["-np", str(r.batch)]
    a += ["-ngl", ("999" if ik else "all") if r.gpu_layers >= n else str(r.gpu_layers)]
    a += ["-fa", "on" if r.flash_attention else "off"]
    if r.kv_quant != "f16" or r.v_type != "f16":
        a += ["-ctk", r.kv_quant, "-ctv", r.v_type]
    if r.ubatch_tokens != default_ubatch(r.engine, r.gpus):
        a += ["-ub", str(r.ubatch_tokens), "-b", str(max(r.ubatch_tokens, r.engine.memory.default_batch_tokens))]
    if r.cpu_moe_layers:
        a += ["--n-cpu-moe", str(r.cpu_moe_layers)]
    if r.load_mode and r.load_mode != "auto":
        # b11434 replaced --no-mmap / --mlock by -lm (arg.cpp:2693-2711); the forks keep the old flags
        old_flags = ik or r.engine.id.startswith("llama.cpp-turboquant")
        a += ({"none": ["--no-mmap"], "mmap+mlock": ["--mlock"]}.get(r.load_mode, []) if old_flags else ["-lm", r.load_mode])
    if len(r.gpus) > 1:
        a += ["-sm", r.split]
        if r.tensor_split:
            a += ["-ts", ",".join(f"{x / sum(r.tensor_split) * 100:.0f}" for x in r.tensor_split)]
        if r.split == "tensor" and not ik:
            a += ["-fit", "off"]  # auto-fit is not supported with --split-mode tensor
    workers = []
    if r.nodes:  # llama.cpp RPC: an rpc-server on every other machine (all its GPUs: tools/rpc/rpc-server.cpp:192-198)
        for k in sorted(set(r.nodes) - {0}):
            gpus = " + ".join(g.id for g, nd in zip(r.gpus, r.nodes) if nd == k)
            workers += [f"# machine {k} ({gpus}), llama.cpp built with -DGGML_RPC=ON; -H 0.0.0.0 listens beyond localhost "
                        "(default 127.0.0.1, rpc-server.cpp:95); -c caches the weights it is sent on local disk",
                        shlex.join(["rpc-server", "-H", "0.0.0.0", "-p", "50052", "-c"])]
        a += ["--rpc", ",".join(f"machine{k}:50052" for k in sorted(set(r.nodes) - {0}))]
    s = r.spec
    if s is not None:
        named = "mtp" if s.card is not None and s.card.engine_method == "mtp" else s.method
        a += ["--spec-type", {"draft": "draft-simple", "eagle": "draft-eagle3", "mtp": "draft-mtp",
                              "dflash": "draft-dflash"}[named]]
        if s.method != "mtp":
            a += ["-md", f"{s.draft.model_name}-{s.draft.quant}.gguf".replace(" ", "-"), "-ngld", "all"]
        a += ["--spec-draft-n-max", str(s.gamma)]
    head = ([f"# machine 0 ({' + '.join(g.id for g, nd in zip(r.gpus, r.nodes) if nd == 0)}): the server; replace "
             "machineK with each machine's address on the network"] if workers else [])
    return "\n".join(workers + head + [shlex.join(a)])  # file names with spaces or parentheses stay one argument


# the same plan in each server's own flag names
_SERVER_FLAGS = {
    "vllm": dict(start=["vllm", "serve"], model=[], tp="--tensor-parallel-size", pp="--pipeline-parallel-size",
                 ctx="--max-model-len", kv="--kv-cache-dtype", kv_names=_VLLM_KV, mem="--gpu-memory-utilization",
                 seqs="--max-num-seqs", tokens="--max-num-batched-tokens"),
    "sglang": dict(start=["python", "-m", "sglang.launch_server"], model=["--model-path"], tp="--tp-size", pp="--pp-size",
                   ctx="--context-length", kv="--kv-cache-dtype", kv_names=_SGLANG_KV, mem="--mem-fraction-static",
                   seqs="--max-running-requests", tokens="--chunked-prefill-size"),
}


def _server(r: Resolved, ctx: int, family: str) -> str:
    f = _SERVER_FLAGS[family]
    a = f["start"] + f["model"] + [r.hf_repo or r.model_name]
    if r.tp_size > 1:
        a += [f["tp"], str(r.tp_size)]
    if r.pp_size > 1:
        a += [f["pp"], str(r.pp_size)]
    if r.dp > 1:  # data-parallel attention, experts over every rank (vLLM DP x EP; SGLang attention DP in a tp group)
        a += (["--data-parallel-size", str(r.dp)] if family == "vllm" else
              ["--tp-size", str(r.dp), "--attn-dp-size", str(r.dp)])
    if r.expert_parallel:  # vLLM: EP over the tensor-parallel (x data-parallel) group (parallel.py:190); SGLang: --ep-size
        a += ["--enable-expert-parallel"] if family == "vllm" else ["--ep-size", str(r.stage_gpus)]
    a += [f["ctx"], str(ctx)]
    kv = f["kv_names"].get(r.kv_quant, r.kv_quant)
    if kv != "auto":
        a += [f["kv"], kv]
    head = ""
    if r.checkpoint_quant:
        pass  # a quantized checkpoint as stored: the engine reads quant_method from its config (vLLM raises on a
        # --quantization that differs from it, config/model.py:1455-1461)
    elif r.quant == "fp8":
        a += ["--quantization", "fp8"]  # on-the-fly FP8 of a BF16 checkpoint
    elif r.quant in ("awq", "gptq"):
        # AWQ/GPTQ weights come from a checkpoint quantized that way: the engine reads the method from
        # its config; naming it makes a BF16 checkpoint fail loudly instead of running in BF16
        a += ["--quantization", r.quant]
        head = (f"# {r.quant.upper()} plan: replace {a[len(f['start']) + len(f['model'])]} with a {r.quant.upper()} "
                f"checkpoint of it (the catalog names the BF16 repository)\n")
    if r.engine.memory.gpu_memory_utilization:
        a += [f["mem"], f"{r.engine.memory.gpu_memory_utilization.value:g}"]
    # vLLM's --max-num-seqs is per data-parallel engine (each rank schedules its own sequences)
    a += [f["seqs"], str(-(-r.batch // r.dp) if family == "vllm" else r.batch)]
    if r.ubatch_tokens != default_ubatch(r.engine, r.gpus):
        a += [f["tokens"], str(r.ubatch_tokens)]
    s = r.spec
    if s is not None:
        repo = s.card.hf_repo if s.card and s.card.hf_repo else s.draft.hf_repo or s.draft.model_name
        named = "mtp" if s.card is not None and s.card.engine_method == "mtp" else s.method
        if family == "vllm":
            # a separate MTP checkpoint (Gemma 4 assistant) is method mtp with its model
            # (vllm/config/speculative.py:1106-1115)
            cfg = {"method": {"draft": "draft_model", "eagle": "eagle3", "mtp": "mtp", "dflash": "dflash"}[named]}
            if s.method != "mtp":
                cfg["model"] = repo
            cfg["num_speculative_tokens"] = s.gamma
            a += ["--speculative-config", json.dumps(cfg)]
        else:
            # NEXTN with a Gemma 4 assistant draft becomes FROZEN_KV_MTP (srt/arg_groups/speculative_hook.py:86-115)
            a += ["--speculative-algorithm", {"draft": "STANDALONE", "eagle": "EAGLE3", "mtp": "NEXTN",
                                              "dflash": "DFLASH"}[named]]
            if s.method != "mtp":
                a += ["--speculative-draft-model-path", repo]
            a += ["--speculative-num-steps", str(1 if s.block else s.gamma), "--speculative-eagle-topk", "1",
                  "--speculative-num-draft-tokens", str(s.gamma + 1)]
    if r.nodes:
        return head + _server_machines(r, family, a)
    return head + shlex.join(a)


def _server_machines(r: Resolved, family: str, a: list[str]) -> str:
    """The commands of a vLLM / SGLang plan over several machines, in the order to run them. vLLM:
    a Ray cluster (ray start --head on machine 0, ray start --address on the others), then one
    `vllm serve ... --distributed-executor-backend ray` on machine 0 (vLLM never picks Ray itself when
    the world is larger than one machine: vllm/config/parallel.py:1066-1077; docs/serving/
    parallelism_scaling.md). SGLang: the same launch_server on every machine with --nnodes,
    --node-rank and --dist-init-addr (srt/arg_groups/fields/parallel.py:32-44)."""
    machines = sorted(set(r.nodes))
    gpus = {k: gpus_label([g.id for g, nd in zip(r.gpus, r.nodes) if nd == k]) for k in machines}
    out = [f"# {len(machines)} machines; replace machine0 with machine 0's address on the network between them"]
    if family == "vllm" and r.dp > 1:
        # multi-node data parallel: the head serves the API and its local ranks; the others run headless ranks
        # from --data-parallel-start-rank, all joining --data-parallel-address (vllm/entrypoints/cli/serve.py:234-255)
        local = r.dp // len(machines)
        for k in machines:
            extra = ["--data-parallel-size-local", str(local), "--data-parallel-address", "machine0"]
            if k:
                extra += ["--headless", "--data-parallel-start-rank", str(k * local)]
            out += [f"# machine {k} ({gpus[k]})" + (": serves the API" if k == 0 else ": headless ranks"),
                    shlex.join(a + extra)]
        return "\n".join(out)
    if family == "vllm":
        out += [f"# machine 0 ({gpus[0]}): the Ray head", shlex.join(["ray", "start", "--head", "--port=6379"])]
        for k in machines[1:]:
            out += [f"# machine {k} ({gpus[k]}): join the Ray cluster",
                    shlex.join(["ray", "start", "--address=machine0:6379"])]
        out += [f"# machine 0, once `ray status` shows all {len(r.gpus)} GPUs: the server",
                shlex.join(a + ["--distributed-executor-backend", "ray"])]
        return "\n".join(out)
    for k in machines:
        out += [f"# machine {k} ({gpus[k]})" + (": serves the API" if k == 0 else ""),
                shlex.join(a + ["--nnodes", str(len(machines)), "--node-rank", str(k), "--dist-init-addr",
                                "machine0:20000"])]
    return "\n".join(out)
