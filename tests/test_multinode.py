"""Plans over several machines: the --gpu form, the network catalog, llama.cpp RPC's cost per step,
and the commands for every machine (docs/multinode.md)."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner

from planner.catalog import Catalog
from planner.cli import main
from planner.deployment import Deployment, parse_machines, resolve
from planner.errors import PlannerError
from planner.perf import step
from planner.speed import estimate, step_model
from test_cli import _flags_table, check_emitted

CAT = Catalog()
CAL = CAT.calibration(None)


@pytest.mark.parametrize("text, machines", [
    ("8xh200", (("h200",) * 8,)),
    ("2x(8xh200)", (("h200",) * 8, ("h200",) * 8)),
    ("rtx4090,rtx3090 / rtx3090", (("rtx4090", "rtx3090"), ("rtx3090",))),
    ("(rtx4090,rtx3090)/(rtx3090)", (("rtx4090", "rtx3090"), ("rtx3090",))),
    ("2 x (m4max)", (("m4max",), ("m4max",))),
])
def test_the_machine_list(text, machines):
    assert parse_machines(text) == machines


@pytest.mark.parametrize("text", ["a//b", "2x(8xh200", "(a,(b))", "0x(h200)", "17x(h200)"])
def test_a_machine_list_it_cannot_read_is_refused(text):
    with pytest.raises(PlannerError):
        parse_machines(text)


def _rpc(gpus, nodes, network, **kw):
    return resolve(CAT, Deployment(model="qwen3-8b", gpus=gpus, nodes=nodes, network=network, ctx_tokens=8192, **kw))


def test_one_rpc_server_costs_a_round_trip_and_two_activation_transfers_per_step():
    """Hand-worked, Qwen3-8B (hidden 4,096) over 10 GbE (1.186 GB/s, 20 us one way), an RTX 4090 server
    and one RTX 3090 behind rpc-server: a decode step of one token sends 4,096 x 4 B = 16,384 B to the
    remote machine and fetches as much back (a round trip): 3 x 20 us + 2 x 16,384 / 1.186e9 s =
    60 + 27.6 = 87.6 us more than the same two GPUs with that boundary free. The device order is
    the RPC server's GPU first (it holds the first layers)."""
    r = _rpc(("rtx4090", "rtx3090"), (0, 1), "10gbe")
    assert [g.id for g in r.gpus] == ["rtx3090", "rtx4090"] and r.nodes == (1, 0)
    sm = step_model(CAT, r, CAL)
    assert sm.rpc_servers == 1 and sm.local_boundaries == 0
    t = step(sm, 1, 1, 1, 1024).comm
    assert float(t) == pytest.approx(3 * 20e-6 + 2 * 16384 / 1.186e9, rel=1e-6)


def test_a_single_machine_plan_is_the_plan_of_today():
    """No machine list, no network: byte for byte the single-machine answer."""
    one = CliRunner().invoke(main, ["fit", "qwen3-8b", "--gpu", "rtx4090,rtx3090", "--ctx", "8k", "--json"])
    same = CliRunner().invoke(main, ["fit", "qwen3-8b", "--gpu", "(rtx4090,rtx3090)", "--ctx", "8k", "--json"])
    assert one.exit_code == same.exit_code == 0
    assert json.loads(one.output) == json.loads(same.output)
    assert json.loads(one.output)["assumptions"]["machines"] is None


@pytest.mark.parametrize("slow, fast", [("1gbe", "10gbe"), ("10gbe", "25gbe"), ("tb5", "tb5-rdma"), ("25gbe", "ib-ndr400")])
def test_a_faster_network_is_never_slower(slow, fast):
    a = estimate(CAT, _rpc(("rtx4090", "rtx3090", "rtx3090"), (0, 1, 2), slow), 8192, cal=CAL)
    b = estimate(CAT, _rpc(("rtx4090", "rtx3090", "rtx3090"), (0, 1, 2), fast), 8192, cal=CAL)
    assert b.decode_tok_s >= a.decode_tok_s and b.prefill_tok_s >= a.prefill_tok_s


def test_more_machines_never_give_less_memory_per_gpu():
    """The same GPUs on one machine or spread over three: every GPU holds as much (the layer split is
    the same; only the order and the link differ), and more machines add GPUs, never take memory."""
    from planner.memory import plan_memory

    one = plan_memory(_rpc(("rtx3090", "rtx3090", "rtx4090"), (), None), 8192)
    three = plan_memory(_rpc(("rtx4090", "rtx3090", "rtx3090"), (0, 1, 2), "10gbe"), 8192)
    assert sorted(d.usable_bytes for d in one.devices) == sorted(d.usable_bytes for d in three.devices)
    assert sum(d.total_bytes for d in three.devices) == pytest.approx(sum(d.total_bytes for d in one.devices), rel=0.02)


def test_what_the_rpc_backend_does_not_take_is_refused():
    with pytest.raises(PlannerError, match="--network"):
        _rpc(("rtx4090", "rtx3090"), (0, 1), None)
    with pytest.raises(PlannerError, match="layer split only"):
        _rpc(("rtx4090", "rtx3090"), (0, 1), "10gbe", split="tensor")
    with pytest.raises(PlannerError, match="RPC backend only"):
        resolve(CAT, Deployment(model="qwen3-8b", gpus=("h100-sxm",) * 2, nodes=(0, 1), network="ib-ndr400",
                                engine="vllm-cuda"))
    with pytest.raises(PlannerError, match="joins machines"):
        _rpc(("rtx4090",), (), "10gbe")
    with pytest.raises(PlannerError, match="did you mean"):
        _rpc(("rtx4090", "rtx3090"), (0, 1), "tb6")


def test_two_macs_over_thunderbolt_and_their_commands():
    """Unified-memory machines may be joined over a network (one GPU each); the plan prints an
    rpc-server line for the other machine and llama-server --rpc on the first, every flag one that
    llama.cpp b11434 registers (hwdb/flags.toml)."""
    res = CliRunner().invoke(main, ["fit", "qwen3-32b", "--gpu", "2x(m4max)", "--network", "tb5-rdma", "--ctx", "32k",
                                    "--emit", "llama.cpp"])
    assert res.exit_code == 0, res.output
    assert "machines 0: m4max (server); 1: m4max; over tb5-rdma" in res.output
    check_emitted("llama.cpp", res.output)
    rpc = next(line for line in res.output.splitlines() if line.startswith("rpc-server"))
    table = _flags_table()["rpc-server"]
    known = set(table["flags"]) | set(table["aliases"].values())
    assert all(w in known for w in shlex.split(rpc) if w.startswith("-"))
    server = next(line for line in res.output.splitlines() if line.startswith("llama-server"))
    assert "--rpc machine1:50052" in server


def test_networks_listing():
    res = CliRunner().invoke(main, ["networks", "--json"])
    nets = {n["id"]: n for n in json.loads(res.output)}
    assert {"1gbe", "10gbe", "tb5", "tb5-rdma", "ib-ndr400"} <= set(nets)
    assert all(n["sources"] for n in nets.values())


def test_compare_prices_one_big_box_against_two_small_ones():
    """compare takes sets over several machines ('/' between machines, '+' between one machine's GPUs,
    'N x (...)'), plans each with the network, and labels them as --gpu writes them. Two RTX 3090s over
    10 GbE hold what two in one box hold and are no faster."""
    from planner.cli import parse_sets_machines

    sets, machines = parse_sets_machines("rtx5090,2xrtx3090,rtx3090/rtx3090,rtx4090+rtx3090/rtx3090,2x(m4max)")
    assert sets[2] == ("rtx3090", "rtx3090") and machines == {2: (0, 1), 3: (0, 0, 1), 4: (0, 1)}
    res = CliRunner().invoke(main, ["compare", "qwen3-32b", "--gpus", "2xrtx3090,rtx3090/rtx3090", "--network", "10gbe",
                                    "--json"])
    assert res.exit_code == 0, res.output
    by = {e["label"]: e for e in json.loads(res.output)["entries"]}
    box, two = by["2xrtx3090"], by["rtx3090 / rtx3090"]
    assert two["nodes"] == [0, 1] and box["nodes"] == []
    assert two["quant"] == box["quant"] and two["max_ctx_tokens"] == box["max_ctx_tokens"]
    assert two["decode_tok_s"] <= box["decode_tok_s"] * 1.001 and two["prefill_tok_s"] <= box["prefill_tok_s"]
    bad = CliRunner().invoke(main, ["compare", "qwen3-32b", "--gpus", "rtx3090/rtx3090"])
    assert bad.exit_code == 2 and "--network" in bad.output
