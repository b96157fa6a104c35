"""Weight bytes of quant recipes against real published file sizes (within 2%)."""

import pytest

from planner.quant import assign_types, tensor_bytes, use_more_bits

CASES = [(mid, f.quant) for mid in (
    "llama-3.1-8b", "llama-3.1-70b", "llama-2-7b", "qwen3.6-27b", "qwen3.6-35b-a3b", "gpt-oss-20b", "gpt-oss-120b")
    for f in __import__("planner.catalog", fromlist=["Catalog"]).Catalog().model(mid).files]


def predicted_bytes(catalog, model, quant):
    m = catalog.model(model)
    r = catalog.recipes.recipes[quant]
    types = catalog.formats.types
    groups = ("text",) if r.format == "gguf" else ("text", "mtp", "vision")
    return sum(tensor_bytes(t, types[s]) for t, s in assign_types(m.arch, r, types) if t.group in groups)


@pytest.mark.parametrize("model,quant", CASES)
def test_file_size_within_2pct(catalog, model, quant):
    f = next(f for f in catalog.model(model).files if f.quant == quant)
    assert predicted_bytes(catalog, model, quant) == pytest.approx(f.size.si, rel=0.02)


def test_q8_0_by_hand(catalog):
    # Llama-3.1-8B Q8_0: every weight in 34-byte blocks of 32 except output (Q8_0 too) and norms (f32)
    a = catalog.model("llama-3.1-8b").arch
    big = sum(t.params for t in a.tensors if t.role != "unquantized")
    small = sum(t.params for t in a.tensors if t.role == "unquantized")
    assert predicted_bytes(catalog, "llama-3.1-8b", "Q8_0") == big * 34 // 32 + small * 4


def test_use_more_bits_matches_llama_cpp():
    # n=32: first 4, last 4, and i with (i-4) % 3 == 2 in between -> 4 + 4 + 8 = 16
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_row_not_multiple_of_block_falls_back(catalog):
    # gpt-oss rows are 2880 = 11.25 x 256: Q4_K cannot hold them, llama.cpp falls back to Q5_0
    m = catalog.model("gpt-oss-20b")
    types = dict(assign_types(m.arch, catalog.recipes.recipes["Q4_K_M"], catalog.formats.types))
    q = next(t for t in types if t.name == "blk.0.attn_q.weight")
    assert types[q] == "Q5_0"


def test_iq2_xxs_mix_on_llama_by_hand(catalog):
    """llama-quant.cpp b11434 for IQ2_XXS on Llama-3.1-8B (GQA 4, 32 layers, untied): token_embd Q2_K
    (525-542), output Q5_K (490-511), attn_v Q4_K (gqa >= 4, 546), attn_k / attn_output base (no
    8-expert bump), ffn_down Q2_K on the first 32 / 8 = 4 layers (553-558), the rest IQ2_XXS. The same
    types llama-quantize --dry-run wrote for a synthetic Llama of this shape (notes of the change)."""
    from planner.deployment import recipe_weights

    _, recipe = catalog.recipe("IQ2_XXS", "gguf")
    types = {w.tensor.name: w.storage for w in recipe_weights(catalog, catalog.model("llama-3.1-8b").arch, recipe)}
    assert (types["token_embd.weight"], types["output.weight"]) == ("Q2_K", "Q5_K")
    assert {types[f"blk.{i}.attn_v.weight"] for i in range(32)} == {"Q4_K"}
    assert types["blk.0.attn_k.weight"] == types["blk.0.attn_output.weight"] == "IQ2_XXS"
    assert [types[f"blk.{i}.ffn_down.weight"] for i in range(6)] == ["Q2_K"] * 4 + ["IQ2_XXS"] * 2
    assert types["blk.5.ffn_up.weight"] == "IQ2_XXS"
