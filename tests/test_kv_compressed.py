"""vLLM 0.33.0's compressed KV caches (--kv-cache-dtype turboquant_*, *_per_token_head, nvfp4*):
their bytes per value (models_db/quant/kv_types.toml), the cache size planned with them, the
command emitted, and the restrictions vLLM applies that the planner does not (yet) enforce.

Page bytes per (token, KV head), from each backend's customize_spec in vLLM 0.33.0:
  TURBOQUANT   turboquant/config.py:128-175   K: FP8 head_dim B, or ceil(head_dim*bits/8) + 2 (fp16 norm);
                                              V: ceil(head_dim*bits/8) + 4 (fp16 scale + zero); K+V rounded to even
  TRITON_ATTN  triton_attn.py:307-319         (head_dim K + head_dim V) x 1 B (int4: / 2) + 2 x 4 B fp32 scales
  FLASHINFER   flashinfer.py:557-570          per K and per V: head_dim/2 + head_dim/16 B (fp4 + fp8 scale per 16)
"""

import math

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from planner.memory import plan_memory

from test_cli import _flags_table, check_emitted

NEW = ["turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_3bit_nc",
       "int8_per_token_head", "fp8_per_token_head", "int4_per_token_head", "nvfp4", "nvfp4_4over6"]


def _kv_bytes(catalog, kv: str, model: str = "llama-3.1-8b", gpu: str = "h100-sxm", ctx: int = 8192) -> int:
    r = resolve(catalog, Deployment(model=model, gpus=(gpu,), engine="vllm-cuda", kv_quant=kv, ctx_tokens=ctx))
    return plan_memory(r, ctx).devices[0].kv_cache_bytes


# ---- the data: the layouts as vLLM 0.33.0 computes them, for head_dim 128 ---------------------------------------

def _tq_slot(key_bits: int, value_bits: int, d: int = 128) -> int:
    """TurboQuantConfig.slot_size_aligned (turboquant/config.py:128-175)."""
    key = d if key_bits == 8 else math.ceil(d * key_bits / 8) + 2
    value = math.ceil(d * value_bits / 8) + 4
    s = key + value
    return s + s % 2


@pytest.mark.parametrize("name, slot", [
    ("turboquant_k8v4", _tq_slot(8, 4)),      # 128 + (64 + 4) = 196
    ("turboquant_4bit_nc", _tq_slot(4, 4)),   # (64 + 2) + (64 + 4) = 134
    ("turboquant_k3v4_nc", _tq_slot(3, 4)),   # (48 + 2) + (64 + 4) = 118
    ("turboquant_3bit_nc", _tq_slot(3, 3)),   # (48 + 2) + (48 + 4) = 102
    ("int8_per_token_head", 256 + 8),         # 128 K + 128 V int8 + 2 fp32 scales
    ("fp8_per_token_head", 256 + 8),
    ("int4_per_token_head", 128 + 8),         # 64 + 64 packed int4 + 2 fp32 scales
    ("nvfp4", 2 * (64 + 8)),                  # per side 128/2 fp4 + 128/16 fp8 scales
    ("nvfp4_4over6", 2 * (64 + 8)),
])
def test_bytes_per_value_are_vllm_page_bytes_for_head_128(catalog, name, slot):
    """K + V of one KV head at head_dim 128 = 256 values; bytes per value = page bytes / 256."""
    assert catalog.kv_types.types[name].bytes_per_value == pytest.approx(slot / 256, abs=0)
    assert catalog.kv_types.types[name].source in catalog.kv_types.sources


def test_vllm_cuda_offers_them_and_flags_allow_them(catalog):
    vllm = _flags_table()["vllm-serve"]
    for name in NEW:
        assert name in catalog.engine("vllm-cuda").kv_types
        assert name in vllm["values"]["--kv-cache-dtype"]  # CacheDType, vllm/config/cache.py:44-67
        assert name in vllm["emitted_values"]["--kv-cache-dtype"]


# ---- hand-worked cache sizes ---------------------------------------------------------------------------------------

def test_turboquant_k8v4_llama_8b_at_8k(catalog):
    """Llama-3.1-8B: 32 layers, 8 KV heads, head_dim 128; 8192 tokens (a whole number of 16-token blocks), batch 1.
    Slot per token per KV head: K FP8 128 B + V 4-bit (128 x 4 / 8 = 64 B + 2 B scale + 2 B zero = 68 B) = 196 B.
    vLLM keeps the first 2 and last 2 layers of a dense model at bf16 (turboquant/config.py:177-213): 28 layers x 8
    heads x 196 B + 4 layers x 8 x 512 B = 43,904 + 16,384 = 60,288 B per token; x 8192 = 493,879,296 B
    (bf16: 131,072 B per token, 2.17 x as much)."""
    assert _kv_bytes(catalog, "turboquant_k8v4") == (28 * 8 * 196 + 4 * 8 * 512) * 8192 == 493_879_296


def test_turboquant_3bit_nc_llama_8b_at_8k(catalog):
    """K 3-bit: 128 x 3 / 8 = 48 B + 2 B norm = 50 B; V 3-bit: 48 B + 4 B = 52 B; slot 102 B.
    28 x 8 x 102 B + 4 x 8 x 512 B (the bf16 boundary layers) = 22,848 + 16,384 = 39,232 B per token; x 8192 =
    321,388,544 B."""
    assert _kv_bytes(catalog, "turboquant_3bit_nc") == (28 * 8 * 102 + 4 * 8 * 512) * 8192 == 321_388_544


def test_int8_per_token_head_llama_8b_at_8k(catalog):
    """(128 K + 128 V) x 1 B + 4 B K scale + 4 B V scale = 264 B per token per KV head.
    32 x 8 x 264 B = 67,584 B per token; x 8192 = 553,648,128 B (528 MiB): 3 % over plain fp8's 512 MiB."""
    assert _kv_bytes(catalog, "int8_per_token_head") == 32 * 8 * 264 * 8192 == 553_648_128
    assert _kv_bytes(catalog, "fp8") == 32 * 8 * 256 * 8192


def test_nvfp4_llama_8b_at_8k(catalog):
    """Per side 128 / 2 = 64 B fp4 + 128 / 16 = 8 B fp8 scales = 72 B; K + V = 144 B per token per KV head.
    32 x 8 x 144 B = 36,864 B per token; x 8192 = 301,989,888 B (288 MiB)."""
    assert _kv_bytes(catalog, "nvfp4") == 32 * 8 * 144 * 8192 == 301_989_888


def test_emit_vllm_kv_cache_dtype():
    res = CliRunner().invoke(main, ["fit", "llama-3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--kv-quant",
                                    "turboquant_k8v4", "--emit", "vllm"])
    assert res.exit_code == 0, res.output
    assert "--kv-cache-dtype turboquant_k8v4" in res.output
    check_emitted("vllm", res.output)


def test_kv_pair_is_still_refused_for_vllm(catalog):
    """turboquant_k8v4 is K 8-bit / V 4-bit in one packed slot under one --kv-cache-dtype: it is not a K/V pair."""
    with pytest.raises(PlannerError, match="one KV-cache type"):
        resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("h100-sxm",), engine="vllm-cuda",
                                    kv_quant="fp8/turboquant_k8v4"))


# ---- what vLLM does beyond the page size: boundary layers, refusals ---------------------------------------------

def test_turboquant_boundary_layers_stay_bf16(catalog):
    """vLLM keeps a dense model's first 2 and last 2 attention layers at the model dtype under turboquant_*
    (turboquant/config.py:177-213, engine/arg_utils.py:2333-2351). vLLM's real cache for turboquant_k8v4 on
    Llama-3.1-8B at 8192 tokens: 28 layers x 8 x 196 B + 4 layers x 8 x 512 B (bf16) = 43,904 + 16,384 = 60,288 B per token; x 8192 = 493,879,296 B (2.17 x less than bf16, not 2.61 x).
    All layers share one block table (UniformTypeKVCacheSpecs, v1/kv_cache_interface.py:1291-1320)."""
    assert _kv_bytes(catalog, "turboquant_k8v4") == (28 * 8 * 196 + 4 * 8 * 512) * 8192


@pytest.mark.parametrize("kv", ["turboquant_k8v4", "int8_per_token_head", "nvfp4"])
def test_mla_models_are_refused(catalog, kv):
    """No CUDA MLA backend takes turboquant_* / *_per_token_head (platforms/cuda.py:96-153; backend.py:314-318);
    nvfp4 is refused with MLA (config/vllm.py:3421-3438)."""
    dep = Deployment(model="deepseek-v3", gpus=("h200",) * 8, engine="vllm-cuda", kv_quant="fp8")
    resolve(catalog, dep)  # the deployment itself is accepted: only the cache type is at fault
    with pytest.raises(PlannerError):
        resolve(catalog, dep.model_copy(update={"kv_quant": kv}))


def test_turboquant_refuses_sliding_window_models(catalog):
    """TURBOQUANT has no sliding window (v1/attention/backend.py:332-333) and no sinks (319-320)."""
    dep = Deployment(model="gemma-3-27b", gpus=("h100-sxm",), engine="vllm-cuda", kv_quant="bf16")
    resolve(catalog, dep)
    with pytest.raises(PlannerError):
        resolve(catalog, dep.model_copy(update={"kv_quant": "turboquant_4bit_nc"}))


def test_fp8_per_token_head_refused_on_ampere(catalog):
    """TRITON_ATTN raises for an fp8* cache below compute capability 8.9 (triton_attn.py:514-524)."""
    _kv_bytes(catalog, "int8_per_token_head", gpu="a100-80gb")  # int8 runs there
    with pytest.raises(PlannerError):
        _kv_bytes(catalog, "fp8_per_token_head", gpu="a100-80gb")


def test_turboquant_speed_is_not_claimed():
    """Published TurboQuant runs decoded slower than fp8 while the bytes-read roofline puts them faster: the plan
    says so and gives no interval."""
    from planner.speed import estimate

    from planner.catalog import Catalog

    cat = Catalog()
    r = resolve(cat, Deployment(model="llama-3.1-8b", gpus=("h100-sxm",), engine="vllm-cuda",
                                kv_quant="turboquant_k8v4", ctx_tokens=8192))
    p = estimate(cat, r, 8192)
    assert p.decode_interval is None and any("not predicted" in n for n in p.notes)
