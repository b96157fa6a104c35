"""Regression tests of issue 17's option defects: 4 (a zero --tensor-split share, more GPUs than
layers), 10 (host RAM beyond any host passed silently), 11 (--host-ram 0.5, --budget nan, a
309-digit --ctx, an alias taking over another model's id) and click's usage errors on one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner import units
from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, resolve
from planner.errors import PlannerError
from planner.fit import fit
from planner.memory import plan_memory

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, list(args))


def one_error_line(r) -> str:
    """The exit-2 message: exactly one line on stderr, `error: ...`."""
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit)
    return lines[0]


# --- 4: a GPU with a share of 0, or more GPUs than layers -------------------------------------

def test_zero_share_leaves_that_gpu_without_layers_as_llamacpp_does(catalog):
    # llama.cpp (llama-model.cpp, load_tensors): layer il goes to the first GPU whose cumulative
    # share exceeds il / n; a share of 0 gets no layer, and the output head goes with the last layer
    r = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("rtx3090", "rtx3090"), tensor_split=(0.0, 1.0),
                                    ctx_tokens=8192))
    res = fit(catalog, r)
    d0, d1 = res.memory.devices
    assert d0.layers == 0 and d0.weights_bytes == 0 and d0.kv_cache_bytes == 0
    assert d1.layers == 32
    assert res.perf.decode_tok_s > 0
    assert any("no layers" in w for w in res.warnings)
    r10 = resolve(catalog, Deployment(model="llama-3.1-8b", gpus=("rtx3090", "rtx3090"), tensor_split=(1.0, 0.0),
                                      ctx_tokens=8192))
    p = plan_memory(r10, 8192)
    assert p.devices[0].layers == 32 and p.devices[1].weights_bytes == 0  # the head stays on GPU 0


def test_more_gpus_than_layers_plans_instead_of_crashing():
    r = run("fit", "llama-3.1-8b", "--gpu", "40xrtx3090", "--ctx", "8k", "--json")
    assert r.exit_code == 0, r.output
    devices = json.loads(r.output)["memory"]["devices"]
    assert len(devices) == 40 and sum(d["layers"] for d in devices) == 32
    assert sum(1 for d in devices if d["layers"] == 0) == 8


@pytest.mark.parametrize("ts", ["0,1", "1,0", "0,0"])
def test_tensor_split_with_zero_shares_on_the_command_line(ts):
    r = run("fit", "llama-3.1-8b", "--gpu", "2xrtx3090", "--ctx", "8k", "--tensor-split", ts)
    assert r.exit_code == 0 and r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output


@pytest.mark.parametrize("ts", ["nan,1", "inf,1", "-1,2", "1"])
def test_tensor_split_refuses_what_is_not_a_share(ts):
    assert "--tensor-split" in one_error_line(run("fit", "llama-3.1-8b", "--gpu", "2xrtx3090", "--tensor-split", ts))


# --- 10: host RAM checked against the host even without --host-ram ----------------------------

def test_host_ram_beyond_any_desktop_does_not_fit_without_host_ram():
    r = run("fit", "llama-3.1-8b", "--gpu", "rtx5090", "--batch", "65536", "--ctx", "1M", "--json")
    out = json.loads(r.output)
    assert r.exit_code == 1 and not out["fits"]
    r = run("fit", "llama-3.1-8b", "--gpu", "rtx5090", "--batch", "65536", "--ctx", "1M", "-ngl", "0")
    assert r.exit_code == 1 and "DOES NOT FIT" in r.output
    assert "more than the 256 GiB a ddr5-5600x2 host holds at most" in r.output


def test_host_capacity_comes_from_host_and_host_ram(catalog):
    dep = Deployment(model="llama-3.1-8b", gpus=("rtx5090",), gpu_layers=0, ctx_tokens=131072, batch=32)
    # 32 sequences x 131,072 tokens x 32 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes = 512 GiB in host RAM
    desktop = plan_memory(resolve(catalog, dep), 131072)
    assert desktop.host_bytes > 512 * units.GiB and desktop.host_fits is False
    server = plan_memory(resolve(catalog, dep.model_copy(update={"host": "ddr4-3200x8"})), 131072)
    assert server.host_fits is None and server.fits  # 4 TiB fits in such a host; not checked against a size
    given = plan_memory(resolve(catalog, dep.model_copy(update={"host_ram_bytes": 1024 * units.GiB})), 131072)
    assert given.host_fits is True and given.fits  # --host-ram says more than a desktop holds: believed


def test_every_shipped_host_states_its_most_ram(catalog):
    for h in catalog.hosts.values():
        assert h.max_capacity is not None and h.max_capacity.is_estimate and h.max_capacity_bytes >= 64 * units.GiB


# --- 11: option values --------------------------------------------------------------------------

def test_host_ram_below_a_byte_is_one_line():
    line = one_error_line(run("fit", "llama-3.1-8b", "--gpu", "rtx5090", "--host-ram", "0.5"))
    assert "--host-ram '0.5': give a size such as 64GiB" in line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_budget_must_be_a_finite_number(value):
    assert "--budget" in one_error_line(run("compare", "llama-3.1-8b", "--gpus", "rtx5090", "--budget", value, "--json"))


@pytest.mark.parametrize("opt", ["--accept", "--accept-len", "--observed"])
def test_other_numbers_must_be_finite(opt):
    assert opt in one_error_line(run("fit", "qwen3.6-27b", "--gpu", "rtx5090", "--spec", "mtp", opt, "nan"))


def test_token_counts_are_bounded():
    line = one_error_line(run("fit", "llama-3.1-8b", "--gpu", "rtx5090", "--ctx", "9" * 309))
    assert "absurdly large" in line and len(line) < 200
    with pytest.raises(PlannerError, match="absurdly large"):
        units.parse_tokens("9" * 400 + "M")
    with pytest.raises(PlannerError, match="absurdly large"):
        units.parse_bytes("9" * 400 + "TiB")


def _data_copy(tmp_path: Path) -> Path:
    for d in ("hwdb", "models_db"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("runs"))
    return tmp_path


def test_an_alias_may_not_take_over_another_models_id(tmp_path):
    root = _data_copy(tmp_path)
    a = root / "models_db/models/llama-3.2-1b.toml"
    text = a.read_text()
    assert "aliases" in text
    a.write_text(text.replace("aliases = [", 'aliases = ["llama-3.1-8b", ', 1))
    with pytest.raises(PlannerError) as e:
        Catalog(root)
    msg = str(e.value)
    assert "llama-3.2-1b.toml" in msg and "llama-3.1-8b.toml" in msg and "\n" not in msg


def test_an_alias_may_not_be_another_models_alias(tmp_path):
    root = _data_copy(tmp_path)
    catalog = Catalog(ROOT)
    other_alias = catalog.models["llama-3.1-8b"].aliases[0]
    a = root / "models_db/models/llama-3.2-1b.toml"
    a.write_text(a.read_text().replace("aliases = [", f'aliases = ["{other_alias.upper()}", ', 1))
    with pytest.raises(PlannerError, match="alias"):
        Catalog(root)


# --- click's usage errors: one line, exit 2, the hint to --help -----------------------------------

@pytest.mark.parametrize("args,hint", [
    (["fit", "llama-3.1-8b", "--gpu", "rtx5090", "--bogus"], "planner fit --help"),
    (["fit"], "planner fit --help"),
    (["fit", "llama-3.1-8b"], "planner fit --help"),
    (["fit", "llama-3.1-8b", "--gpu", "rtx5090", "--batch", "0"], "planner fit --help"),
    (["plot", "memory", "llama-3.1-8b", "--gpu", "rtx5090"], "planner plot memory --help"),
    (["calibrate", "fit"], "planner calibrate fit --help"),
    (["nosuch"], "planner --help"),
    (["--bogus"], "planner --help"),
])
def test_usage_errors_are_one_line_with_the_help_hint(args, hint):
    line = one_error_line(run(*args))
    assert line.endswith(f"(see `{hint}`)")
