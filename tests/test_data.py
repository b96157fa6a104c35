"""Data integrity: schemas, sources, GGML block sizes, and 'one file, no code' extensibility."""

import shutil

import gguf
import pytest

from planner.catalog import Catalog
from planner.errors import PlannerError

REQUIRED_GPUS = ["rtx5090", "rtx5080", "rtx4090", "rtx3090", "rtx3090ti", "rtx3070ti", "rtx-a6000", "rtx6000-ada",
                 "rtx-pro-6000-blackwell", "v100-16gb", "v100-32gb", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie",
                 "h200", "b200", "gb10", "mi50-16gb", "mi50-32gb", "mi60", "mi300x", "rx7900xtx", "radeon-ai-pro-r9700",
                 "arc-pro-b60", "m2pro", "m3max", "m4max", "strix-halo", "crescent-island-160gb", "crescent-island-480gb"]
REQUIRED_MODELS = ["qwen3.6-27b", "qwen3.5-27b", "qwen3.6-35b-a3b", "qwen3.5-397b-a17b", "qwen3-next-80b-a3b", "qwen3-32b",
                   "qwen3-30b-a3b", "qwen3-8b", "qwen3-0.6b", "qwen2.5-32b", "gemma-4-31b", "gemma-4-26b-a4b", "gemma-4-e4b",
                   "gemma-4-e2b", "gemma-3-27b", "llama-2-7b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.2-1b",
                   "gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "glm-5.1", "mimo-v2.5"]


def test_catalog_has_required_entries(catalog):
    assert set(REQUIRED_GPUS) <= set(catalog.gpus)
    assert set(REQUIRED_MODELS) <= set(catalog.models)


def test_ggml_block_sizes_match_gguf_package(catalog):
    for name, t in catalog.formats.types.items():
        if t.ggml:
            assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == (t.block_weights, t.block_bytes), name


def test_unreleased_gpus_mark_their_estimates(catalog):
    for g in catalog.gpus.values():
        if g.status == "unreleased":
            assert g.specs.memory_bandwidth is None or g.specs.memory_bandwidth.is_estimate


def test_every_gpu_has_memory_and_bandwidth(catalog):
    for g in catalog.gpus.values():
        assert g.memory_bytes > 0
        assert g.bandwidth_bytes_per_s and g.bandwidth_bytes_per_s > 1e11, g.id


def test_unsourced_number_is_rejected(tmp_path):
    root = _copy(tmp_path)
    p = root / "hwdb/gpus/rtx3090.toml"
    p.write_text(p.read_text().replace('memory_bandwidth = { value = 936.2, unit = "GB/s", source = "topcpu_3090"',
                                       'memory_bandwidth = { value = 936.2, unit = "GB/s"'))
    with pytest.raises(PlannerError, match="rtx3090.toml.*provenance"):
        Catalog(root)


def test_unknown_key_is_rejected_with_file_and_key(tmp_path):
    root = _copy(tmp_path)
    p = root / "hwdb/gpus/rtx3090.toml"
    p.write_text(p.read_text().replace("[specs]", "[specs]\nmemroy = { value = 1, unit = \"GiB\", source = \"topcpu_3090\" }"))
    with pytest.raises(PlannerError, match=r"rtx3090.toml: key specs.memroy"):
        Catalog(root)


def test_adding_a_gpu_and_a_model_is_one_file_each(tmp_path):
    root = _copy(tmp_path)
    (root / "hwdb/gpus/testcard-48gb.toml").write_text('''
name = "Test Card 48 GB"
vendor = "nvidia"
architecture = "Test"
compute_capability = "9.0"
memory_type = "GDDR7"
memory_kind = "dedicated"
status = "released"
[specs]
memory = { value = 48, unit = "GiB", source = "ds" }
memory_bandwidth = { value = 1000, unit = "GB/s", source = "ds" }
[sources]
ds = { url = "https://example.com/datasheet", kind = "datasheet" }
''')
    (root / "models_db/models/tiny-llama.toml").write_text('''
name = "Tiny"
hf_repo = "example/tiny"
config_source = "cfg"
[sources]
cfg = { url = "https://example.com/config.json", kind = "hf-config" }
[config]
model_type = "llama"
hidden_size = 256
num_hidden_layers = 4
num_attention_heads = 4
num_key_value_heads = 2
intermediate_size = 512
vocab_size = 1000
max_position_embeddings = 2048
''')
    from planner.deployment import Deployment, resolve
    from planner.fit import fit
    c = Catalog(root)
    res = fit(c, resolve(c, Deployment(model="tiny-llama", gpus=("testcard-48gb",), ctx_tokens=2048)))
    assert res.fits and res.max_ctx_tokens == 2048


def _copy(tmp_path):
    src = Catalog().root
    for d in ("hwdb", "models_db"):
        shutil.copytree(src / d, tmp_path / d)
    return tmp_path
