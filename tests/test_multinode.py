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
    with pytest.raises(PlannerError, match="same number of GPUs"):  # vLLM: --nnodes divides the world size
        resolve(CAT, Deployment(model="qwen3-8b", gpus=("h100-sxm",) * 3, nodes=(0, 0, 1), network="ib-ndr400",
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


# --- vLLM / SGLang over several machines ---------------------------------------------------------


def _torch(model, gpus, nodes, network, engine="vllm-cuda", **kw):
    return resolve(CAT, Deployment(model=model, gpus=gpus, nodes=nodes, network=network, engine=engine,
                                   ctx_tokens=kw.pop("ctx_tokens", 4096), **kw))


def _machines(n, per, gpu="h100-sxm"):
    return (gpu,) * (n * per), tuple(k for k in range(n) for _ in range(per))


def test_a_pipeline_boundary_over_the_network_hand_worked():
    """vLLM, Llama-3.1-8B (hidden 4,096) on two machines of one H100 each over 10 GbE (1.186 GB/s, 20 us one
    way), one stage per machine: a stage boundary hands over hidden states and residual, 2 x tokens x
    4,096 x 2 B (bf16), as one NCCL send (the network's 20 us plus NCCL's 8.5 us per hop), and the
    scheduler's step broadcast crosses the network once (20 us). One token: 28.5 + 16,384 / 1.186e9 s
    (13.81 us) + 20 = 62.31 us; 512 tokens: 28.5 + 7,072.6 + 20 = 7,121.1 us."""
    gpus, nodes = _machines(2, 1)
    r = _torch("llama-3.1-8b", gpus, nodes, "10gbe")
    assert (r.tp_size, r.pp_size) == (1, 2)
    sm = step_model(CAT, r, CAL)
    assert (sm.net_boundaries, sm.local_boundaries, sm.tp_machines) == (1, 0, 1)
    for tokens, us in ((1, 28.5 + 16384 / 1.186e9 * 1e6 + 20), (512, 28.5 + 512 * 16384 / 1.186e9 * 1e6 + 20)):
        assert float(step(sm, [tokens], [1], [tokens], [1024]).comm[0]) == pytest.approx(us * 1e-6, rel=1e-6)


def test_an_all_reduce_across_machines_hand_worked():
    """vLLM --tp 16 over two machines of 8 H100s with 8 x NDR 400 links each (50 GB/s, 1.5 us one way): each
    of the 80 x 2 all-reduces per step of Llama-3.1-70B (hidden 8,192) runs inside each machine (as one
    machine's 8-GPU all-reduce) and then as a ring over the 2 machines of each GPU's 1/8 slice: 2 hops of
    1.5 + 8.5 us and 2 x 1/2 x act / (8 links x 50 GB/s). Against the same 16 GPUs in one machine, one token
    (act = 16,384 B) costs per all-reduce 20 us + 16,384 / 4e11 s + (2 x 7/8 - 2 x 15/16) x 16,384 B over
    NVLink, and the step 1.5 us more (the scheduler's broadcast)."""
    gpus, nodes = _machines(2, 8)
    two = step_model(CAT, _torch("llama-3.1-70b", gpus, nodes, "8xib-ndr400", tp=16), CAL)
    one = step_model(CAT, _torch("llama-3.1-70b", gpus, (), None, split="tensor"), CAL)
    assert (two.tp, two.tp_machines, two.rails, one.tp) == (16, 2, 8, 16)
    act = 8192 * 2
    per = 2 * 10e-6 + act / (8 * 50e9) + (2 * 7 / 8 - 2 * 15 / 16) * act / one.link_bandwidth
    diff = float(step(two, [1], [1], [1], [1024]).comm[0]) - float(step(one, [1], [1], [1], [1024]).comm[0])
    assert diff == pytest.approx(160 * per + 1.5e-6, rel=1e-6)


def test_kv_heads_split_replicated_and_mla_latent_whole():
    """The KV cache one GPU holds under vLLM tensor parallelism, hand-worked at 4,096 tokens, batch 1.
    Llama-3.1-70B: 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 B = 327,680 B per token, 1,342,177,280 B in
    all. TP 8: one head each, 167,772,160 B. TP 16: still one head each (replicated twice,
    vllm/config/model.py:1676-1683), 167,772,160 B. TP 8 x PP 2: 40 layers per stage, 83,886,080 B.
    DeepSeek-V3, MLA: every GPU holds its layers' whole latent (576 values x 2 B per layer and token,
    model.py:1673-1675): TP 8 on one machine, 61 x 576 x 2 x 4,096 = 287,834,112 B."""
    from planner.memory import plan_memory

    gpus, nodes = _machines(2, 8)
    kv = lambda r: {d.kv_cache_bytes for d in plan_memory(r, 4096).devices}  # noqa: E731
    assert kv(_torch("llama-3.1-70b", gpus[:8], (), None)) == {167_772_160}
    assert kv(_torch("llama-3.1-70b", gpus, nodes, "8xib-ndr400", tp=16)) == {167_772_160}
    assert kv(_torch("llama-3.1-70b", gpus, nodes, "8xib-ndr400")) == {83_886_080}
    assert kv(_torch("deepseek-v3", gpus[:8], (), None)) == {287_834_112}


@pytest.mark.parametrize("engine, model, pp, layers", [
    ("vllm-cuda", "deepseek-v3", 2, [31, 30]),  # vllm/distributed/utils.py:225-230: extra layers before the last
    ("sglang-cuda", "deepseek-v3", 2, [30, 31]),  # srt/distributed/utils.py:110-149: extra layers on the last
    ("vllm-cuda", "llama-3.1-405b", 4, [31, 32, 32, 31]),
    ("sglang-cuda", "llama-3.1-405b", 4, [31, 31, 32, 32]),
])
def test_pipeline_stages_take_the_engines_layer_partition(engine, model, pp, layers):
    from planner.memory import plan_memory

    gpus, nodes = _machines(pp, 8)
    r = _torch(model, gpus, nodes, "8xib-ndr400", engine=engine)
    assert [d.layers for d in plan_memory(r, 4096).devices[::8]] == layers


def test_expert_parallel_busiest_gpu():
    """The busiest GPU's expected expert count, computed exactly, against random draws (4,000 per case,
    within 3%); 1 once every expert is touched. Planned: EP
    decodes one token slower than tensor parallelism, a large batch as fast, in the same memory."""
    import numpy as np

    from planner.memory import plan_memory
    from planner.perf import ep_imbalance

    rng = np.random.default_rng(0)
    for tokens in (1, 4, 16):
        picks = np.array([rng.permutation(256)[:8] for _ in range(tokens * 4000)]).reshape(4000, tokens * 8)
        busiest = [np.bincount(np.unique(p) // 32, minlength=8).max() / (len(np.unique(p)) / 8) for p in picks]
        exact = float(np.mean(busiest))
        assert float(ep_imbalance(256, 8, 8, [tokens])[0]) == pytest.approx(exact, rel=0.03)
    assert float(ep_imbalance(256, 8, 8, [4096])[0]) == 1.0
    gpus, nodes = _machines(2, 8)
    tp = _torch("deepseek-v3", gpus, nodes, "8xib-ndr400")
    ep = _torch("deepseek-v3", gpus, nodes, "8xib-ndr400", expert_parallel=True)
    assert [d.total_bytes for d in plan_memory(tp, 4096).devices] == [d.total_bytes for d in plan_memory(ep, 4096).devices]
    s_tp, s_ep = step_model(CAT, tp, CAL), step_model(CAT, ep, CAL)
    assert float(step(s_ep, [1], [1], [1], [1024]).total[0]) > 1.05 * float(step(s_tp, [1], [1], [1], [1024]).total[0])
    assert float(step(s_ep, [4096], [4096], [1], [1024]).total[0]) == pytest.approx(
        float(step(s_tp, [4096], [4096], [1], [1024]).total[0]))


@pytest.mark.parametrize("slow, fast", [("10gbe", "100gbe"), ("roce-100", "ib-ndr400"), ("ib-ndr400", "8xib-ndr400"),
                                        ("ib-hdr", "ib-xdr")])
@pytest.mark.parametrize("tp", [8, 16])
def test_a_faster_network_never_slows_vllm(slow, fast, tp):
    gpus, nodes = _machines(2, 8)
    a = estimate(CAT, _torch("llama-3.1-70b", gpus, nodes, slow, tp=tp), 4096, cal=CAL)
    b = estimate(CAT, _torch("llama-3.1-70b", gpus, nodes, fast, tp=tp), 4096, cal=CAL)
    assert b.decode_tok_s >= a.decode_tok_s and b.prefill_tok_s >= a.prefill_tok_s


def test_more_machines_never_leave_less_memory_per_gpu():
    """DeepSeek-V3 in vLLM, one stage per machine of 8 H100s: each added machine takes layers off the
    others, so the tightest GPU's free memory only grows."""
    from planner.memory import plan_memory

    free = []
    for n in (2, 3, 4):
        gpus, nodes = _machines(n, 8)
        p = plan_memory(_torch("deepseek-v3", gpus, nodes, "8xib-ndr400"), 4096)
        free.append(min(d.usable_bytes - d.total_bytes for d in p.devices))
    assert free == sorted(free)


def test_one_machine_in_the_machine_form_is_the_one_machine_plan():
    one = CliRunner().invoke(main, ["fit", "llama-3.1-70b", "--gpu", "8xh100-sxm", "--engine", "vllm", "--json"])
    same = CliRunner().invoke(main, ["fit", "llama-3.1-70b", "--gpu", "1x(8xh100-sxm)", "--engine", "vllm", "--json"])
    assert one.exit_code == same.exit_code == 0 and json.loads(one.output) == json.loads(same.output)


@pytest.mark.parametrize("args, message", [
    (["llama-3.1-8b", "--gpu", "3xh100-sxm", "--engine", "vllm", "--tp", "3"], "divisible by the tensor-parallel"),
    (["llama-3.1-8b", "--gpu", "4xh100-sxm", "--engine", "vllm", "--tp", "3"], "--tp 3 x --pp 1 = 3 GPUs"),
    (["llama-3.1-8b", "--gpu", "4xrtx3090", "--tp", "2"], "tensor groups inside pipeline stages"),
    (["llama-3.1-70b", "--gpu", "2xh100-sxm", "--engine", "vllm", "--ep"], "not a mixture-of-experts"),
    (["deepseek-v3", "--gpu", "2x(8xh100-sxm)", "--network", "ib-ndr400", "--engine", "vllm", "--pp", "16", "--ep"],
     "needs --tp 2 or more"),
    (["deepseek-v3", "--gpu", "8xh100-sxm/4xh100-sxm", "--network", "ib-ndr400", "--engine", "vllm"],
     "same number of GPUs"),
])
def test_layouts_the_engines_refuse(args, message):
    res = CliRunner().invoke(main, ["fit", *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_deepseek_on_two_h100_machines_and_its_commands():
    """The worked plan of docs/multinode.md: vLLM, tensor parallel 8 inside each machine, pipeline 2 across,
    launched on a Ray cluster; SGLang with --nnodes / --node-rank on each machine. Every flag is one the
    engine registers (hwdb/flags.toml)."""
    base = ["fit", "deepseek-v3", "--gpu", "2x(8xh100-sxm)", "--network", "8xib-ndr400", "--ctx", "32k"]
    res = CliRunner().invoke(main, [*base, "--engine", "vllm", "--emit", "vllm"])
    assert res.exit_code == 0, res.output
    assert "tensor parallel 8 x pipeline parallel 2" in res.output
    lines = res.output.splitlines()
    assert "ray start --head --port=6379" in lines and "ray start --address=machine0:6379" in lines
    serve = next(x for x in lines if x.startswith("vllm serve"))
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in serve and "--distributed-executor-backend ray" in serve
    check_emitted("vllm", res.output)
    ray = _flags_table()["ray-start"]["flags"]
    for x in lines:
        if x.startswith("ray start"):
            assert all(w.split("=")[0] in ray for w in shlex.split(x)[2:])
    res = CliRunner().invoke(main, [*base, "--engine", "sglang", "--ep", "--emit", "sglang"])
    assert res.exit_code == 0, res.output
    cmds = [x for x in res.output.splitlines() if x.startswith("python -m sglang")]
    assert len(cmds) == 2 and all("--nnodes 2" in c and "--ep-size 8" in c for c in cmds)
    assert ["--node-rank 0" in cmds[0], "--node-rank 1" in cmds[1]] == [True, True]
    for c in cmds:
        check_emitted("sglang", c)
    js = json.loads(CliRunner().invoke(main, [*base, "--engine", "vllm", "--json"]).output)
    m = js["assumptions"]["machines"]
    assert m["transport"] == "torch.distributed (NCCL)" and m["links_per_machine"] == 8
    assert js["assumptions"]["parallel"] == {"tp": 8, "pp": 2, "dp": 1, "expert_parallel": False}


def test_every_published_multinode_run_is_planned_and_scored():
    """hwdb/runs/multinode-published.csv: every row plans (its machines, network and engine as written) and
    gets a speed; the llama.cpp RPC rows stay within the errors docs/multinode.md reports (+-60%), and the
    one-machine rows are there beside the several-machine rows of their source."""
    from planner import multinode

    rows = multinode.load(multinode.default_path(CAT.root))
    scored = multinode.score(CAT, rows)
    assert len(scored) == len(rows) >= 10
    rpc = [s for s in scored if s.row["engine"].startswith("llama.cpp") and s.machines > 1]
    assert len(rpc) >= 6 and all(abs(s.error) < 0.6 for s in rpc)
    assert any(s.machines > 1 and s.row["engine"] == "sglang-cuda" for s in scored)
    md = "\n".join(multinode.lines(scored, markdown=True))
    assert "2 machines against one" in md and "sglang-3656" in md


def test_an_unvalidated_vllm_moe_decode_says_so_and_gives_no_interval():
    gpus, nodes = _machines(2, 8)
    p = estimate(CAT, _torch("deepseek-v3", gpus, nodes, "8xib-ndr400"), 4096, cal=CAL)
    assert p.decode_interval is None and any("not validated" in n for n in p.notes)
    dense = estimate(CAT, _torch("llama-3.1-70b", gpus, nodes, "8xib-ndr400"), 4096, cal=CAL)
    assert not any("MLA mixture-of-experts" in n for n in dense.notes)  # (vLLM's batch-1 caveat is another)


def test_wide_ep_all_gather_volume_hand_worked():
    """vLLM --dp 16 --ep over two machines of 8 H100s (8 x NDR 400 each), DeepSeek-V3 (hidden 7,168; 58 of its
    61 layers MoE): each MoE layer all-gathers every rank's tokens and reduce-scatters the outputs back
    (vllm all2all.py:116-161). For 256 tokens in all, the gather is 256 x 7,168 x 2 B = 3,670,016 B: each GPU
    receives the 7/8 of its machine's half over NVLink and each machine the other half, 1,835,008 B, over 8
    links (one hop: 1.5 + 8.5 us). Per step: 58 x 2 x (link latency + 7/8 x act / NVLink + 10 us +
    act / 2 / 400 GB/s) + 1.5 us of step broadcast."""
    gpus, nodes = _machines(2, 8)
    r = _torch("deepseek-v3", gpus, nodes, "8xib-ndr400", dp=16, expert_parallel=True, batch=256)
    assert (r.tp_size, r.pp_size, r.dp, r.stage_gpus) == (1, 1, 16, 16)
    sm = step_model(CAT, r, CAL)
    assert sum(s.moe_layers for s in sm.gpus[:1]) == 58 and sm.tp_machines == 2
    act = 256 * 7168 * 2
    one = sm.eff.link_latency_s + 7 / 8 * act / sm.link_bandwidth + 10e-6 + act / 2 / (8 * 50e9)
    comm = float(step(sm, [256], [256], [1], [1024]).comm[0])
    assert comm == pytest.approx(58 * 2 * one + 1.5e-6, rel=1e-6)


def test_wide_ep_memory_per_gpu():
    """Every rank holds all the attention and dense weights, 1/16 of the routed experts, and the cache of its
    1/16 of the sequences (MLA latent whole per sequence)."""
    from planner.memory import plan_memory

    gpus, nodes = _machines(2, 8)
    r = _torch("deepseek-v3", gpus, nodes, "8xib-ndr400", dp=16, expert_parallel=True, batch=64)
    lb = r.layer_bytes
    experts = sum(lb.experts)
    dense = sum(lb.weights) - experts + lb.input_bytes + lb.output_bytes
    devs = plan_memory(r, 4096).devices
    assert all(abs(d.weights_bytes - (dense + experts / 16)) <= 3 for d in devs)
    assert {d.kv_cache_bytes for d in devs} == {61 * 576 * 2 * 4096 * 64 // 16}


@pytest.mark.parametrize("args, message", [
    (["llama-3.1-70b", "--gpu", "8xh100-sxm", "--engine", "vllm", "--dp", "8", "--ep"], "independent replicas"),
    (["deepseek-v3", "--gpu", "8xh200", "--engine", "vllm", "--dp", "8"], "add --ep"),
    (["deepseek-v3", "--gpu", "8xh200", "--engine", "vllm", "--dp", "4", "--ep"], "--dp 8 without --tp"),
    (["llama-3.1-70b", "--gpu", "8xh100-sxm", "--engine", "vllm", "--dp", "8"], "independent replicas"),
])
def test_data_parallel_layouts_refused(args, message):
    res = CliRunner().invoke(main, ["fit", *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_wide_ep_commands():
    base = ["fit", "deepseek-v3", "--gpu", "2x(8xh100-sxm)", "--network", "8xib-ndr400", "--ctx", "8k", "--dp", "16",
            "--ep", "--batch", "64"]
    res = CliRunner().invoke(main, [*base, "--engine", "vllm", "--emit", "vllm"])
    assert res.exit_code == 0, res.output
    cmds = [x for x in res.output.splitlines() if x.startswith("vllm serve")]
    assert len(cmds) == 2 and all("--data-parallel-size 16" in c and "--enable-expert-parallel" in c for c in cmds)
    assert "--headless --data-parallel-start-rank 8" in cmds[1] and "--headless" not in cmds[0]
    assert all("--max-num-seqs 4" in c for c in cmds)  # per data-parallel engine
    for c in cmds:
        check_emitted("vllm", c)
    res = CliRunner().invoke(main, [*base, "--engine", "sglang", "--emit", "sglang"])
    cmds = [x for x in res.output.splitlines() if x.startswith("python -m sglang")]
    assert len(cmds) == 2 and all("--attn-dp-size 16" in c and "--ep-size 16" in c for c in cmds)
    for c in cmds:
        check_emitted("sglang", c)


def test_data_parallel_attention_is_one_stage_not_a_pipeline():
    """--dp 16 runs every GPU as a rank of one stage: a prompt's chunks are not pipelined across ranks, so the
    prefill time is the same with the engine's pipeline_prefill on or off."""
    import dataclasses

    from planner.perf import prefill_time

    gpus, nodes = _machines(2, 8)
    sm = step_model(CAT, _torch("deepseek-v3", gpus, nodes, "8xib-ndr400", dp=16, expert_parallel=True, batch=64), CAL)
    assert sm.pipeline_prefill
    off = dataclasses.replace(sm, pipeline_prefill=False)
    args = ([64], [512], [0], [8192])
    assert float(prefill_time(sm, *args)[0]) == float(prefill_time(off, *args)[0])
