"""The names users type, tried against a planner checkout: how many resolve.

Each name is tried in one `planner fit` (a small model or a roomy GPU for the other options, so
only the name under test can fail). Exit 0 (fits) or 1 (does not fit) means every name resolved;
exit 2 is an error, and its first line is shown. Usage:

    python bench/names_tried.py                 # this checkout
    python bench/names_tried.py --repo OLD      # another checkout (e.g. a git worktree of an old commit)
    python bench/names_tried.py --markdown      # the summary table and every name that failed

Runs in-process through click's test runner (one import), about 1 s a name on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (kind, the name as a user types it, the fit arguments it is tried in)
NAMES: list[tuple[str, str, list[str]]] = []


def _add(kind: str, names: list[str], args) -> None:
    for n in names:
        NAMES.append((kind, n, args(n)))


_add("engine", ["llama.cpp", "llamacpp", "llama-cpp", "llama.cpp-cuda", "ollama", "LM Studio", "lmstudio",
                "vllm", "vLLM", "vllm@0.11", "sglang", "SGLang", "mistral.rs", "mistralrs", "ik_llama.cpp",
                "ik-llama.cpp", "exllamav2", "exllamav3", "tabbyapi", "koboldcpp"],
     lambda n: ["llama-3.1-8b", "--gpu", "rtx4090", "--engine", n])
_add("engine", ["mlx", "mlx-lm", "llama.cpp-metal"], lambda n: ["llama-3.1-8b", "--gpu", "m4max", "--engine", n])
_add("engine", ["llama.cpp-rocm", "vllm-rocm"], lambda n: ["llama-3.1-8b", "--gpu", "mi300x", "--engine", n])

_add("gpu", ["rtx5090", "RTX 5090", "rtx 5090", "NVIDIA GeForce RTX 5090", "5090", "2x 3090", "2x RTX 3090",
             "3090 Ti", "rtx3090ti", "4090", "RTX 4080", "4070 Ti Super", "4060 Ti 16GB", "3060 12GB",
             "RTX 5070 Ti", "5060 Ti 16GB", "2080 Ti", "P40", "Tesla P40", "V100", "A100", "A100 80GB",
             "H100", "H100 PCIe", "H100 SXM", "H200", "B200", "L40S", "L4", "A10", "T4",
             "7900 XTX", "7900xtx", "RX 7900 XT", "RX 9070 XT", "W7900", "MI50", "MI60", "MI100", "MI300X",
             "Arc B580", "M4 Max", "m4 max", "M4 Pro", "M3 Ultra", "M2 Ultra", "M1 Ultra",
             "DGX Spark", "GB10", "Strix Halo", "Ryzen AI Max+ 395", "Crescent Island"],
     lambda n: ["qwen3-0.6b", "--gpu", n])

_add("quant", ["Q4_K_M", "q4_k_m", "Q8_0", "Q6_K", "Q5_K_M", "Q4_0", "IQ4_XS", "IQ4_NL", "IQ3_XXS",
               "IQ3_M", "IQ2_XXS", "IQ2_M", "IQ1_S", "Q2_K", "Q3_K_M", "MXFP4_MOE", "mxfp4", "F16", "BF16",
               "UD-Q4_K_XL", "UD-Q2_K_XL", "UD-IQ2_XXS", "UD-Q8_K_XL", "Q4_K_XL"],
     lambda n: ["qwen3-30b-a3b", "--gpu", "h200", "--engine", "llama.cpp", "--quant", n])
_add("quant", ["awq", "gptq", "w4a16", "int4", "w8a8", "fp8", "nvfp4", "bf16"],
     lambda n: ["qwen3-30b-a3b", "--gpu", "h200", "--engine", "vllm", "--quant", n])
_add("quant", ["4bit", "mlx-4bit", "8bit"], lambda n: ["qwen3-30b-a3b", "--gpu", "m4max", "--engine", "mlx", "--quant", n])
_add("quant", ["IQ4_KS", "IQ2_KT", "IQ4_K"],
     lambda n: ["qwen3-30b-a3b", "--gpu", "h200", "--engine", "ik_llama.cpp", "--quant", n])
_add("quant", ["exl2-4.0bpw", "exl3-4.0bpw", "4.0bpw"],
     lambda n: ["qwen3-30b-a3b", "--gpu", "h200", "--engine", "exllamav3", "--quant", n])

_add("model", ["qwen3.6-27b", "Qwen3.6-27B", "Qwen/Qwen3.6-27B", "qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B",
               "llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 8B", "gpt-oss-20b",
               "openai/gpt-oss-120b", "gemma-4-31b", "google/gemma-4-31b-it", "Gemma 3 27B", "deepseek-v3",
               "DeepSeek-V3", "deepseek-ai/DeepSeek-R1", "kimi-k2", "GLM-5.1", "qwen3-next-80b-a3b",
               "unsloth/Qwen3.6-27B-GGUF"],
     lambda n: [n, "--gpu", "8xh200"])

_add("kv", ["f16", "q8_0", "q4_0", "q8_0/q4_0", "fp8", "q8", "turbo4"],
     lambda n: ["llama-3.1-8b", "--gpu", "rtx4090", "--engine", "llama.cpp", "--kv-quant", n])


def run(repo: Path) -> list[dict]:
    sys.path.insert(0, str(repo))
    from click.testing import CliRunner
    from planner.cli import main
    out = []
    runner = CliRunner()
    for kind, name, args in NAMES:
        r = runner.invoke(main, ["fit", *args])
        text = (r.output or "") + (str(r.exception) if r.exception and not isinstance(r.exception, SystemExit) else "")
        err = next((ln for ln in text.splitlines() if ln.lower().startswith(("error", "usage"))), text.strip()[:160])
        out.append({"kind": kind, "name": name, "exit": r.exit_code,
                    "resolved": r.exit_code in (0, 1), "error": "" if r.exit_code in (0, 1) else err[:200]})
    return out


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = run(a.repo.resolve())
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    kinds = sorted({r["kind"] for r in rows}, key=[k for k, _, _ in NAMES].index)
    print("| kind | tried | resolve |\n|---|---:|---:|")
    for k in kinds:
        sel = [r for r in rows if r["kind"] == k]
        print(f"| {k} | {len(sel)} | {sum(r['resolved'] for r in sel)} |")
    print(f"| all | {len(rows)} | {sum(r['resolved'] for r in rows)} |")
    if a.markdown:
        print("\nNot resolved:\n")
        for r in rows:
            if not r["resolved"]:
                print(f"- {r['kind']} `{r['name']}`: {r['error']}")


if __name__ == "__main__":
    main_()
