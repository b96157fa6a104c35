"""fit(): suggestions are deployments the engine accepts."""

from __future__ import annotations

import pytest


def test_a_suggestion_is_never_one_resolve_refuses():
    """A quantized KV cache does not fit llama.cpp's tensor split (resolve refuses it): the
    suggestions for a tensor split that does not fit must not offer it (each suggestion is checked
    by the engine's rules, planner.deployment.check_engine_rules)."""
    from planner.catalog import Catalog
    from planner.deployment import Deployment, resolve
    from planner.errors import PlannerError
    from planner.fit import fit

    c = Catalog()
    dep = Deployment(model="llama-3.1-70b", gpus=("rtx3090", "rtx3090"), split="tensor", ctx_tokens=131072)
    res = fit(c, resolve(c, dep))
    assert not res.fits and res.suggestions
    assert not any(s.change.startswith("--kv-quant") for s in res.suggestions)
    with pytest.raises(PlannerError, match="tensor does not support a quantized KV"):
        resolve(c, Deployment(model="llama-3.1-70b", gpus=("rtx3090", "rtx3090"), split="tensor", kv_quant="q8_0"))
