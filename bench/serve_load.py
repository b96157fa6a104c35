"""A load generator for llama-server: requests of known token counts, arriving as a Poisson process
or from closed-loop clients, timed at the client as `vllm bench serve` times them.

Each request posts token ids to /completion (so the prompt is exactly PROMPT tokens whatever the
tokenizer), with n_predict = GEN and ignore_eos, streamed: TTFT is the time from sending to the
first streamed token, TPOT (end - first token) / (tokens - 1). One JSON line per request goes to
OUT (the first line holds the run's conditions), which `planner validate --serving` reads back and
simulates with the same arrival times and lengths (docs/simulate.md#validation).

Standard library only: it runs on the lent GPU machine beside the server.

  python3 bench/serve_load.py --url http://127.0.0.1:8080 --rate 4 --requests 64 \
      --prompt 1024 --gen 128 --seed 1 --out run.jsonl --meta '{"model": "llama-3.1-8b", ...}'
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import threading
import time
from urllib.parse import urlparse


def one_request(url, prompt_ids, gen, t0, rec):
    u = urlparse(url)
    body = json.dumps({"prompt": prompt_ids, "n_predict": gen, "ignore_eos": True, "stream": True,
                       "temperature": 0.0}).encode()
    rec["sent_s"] = time.perf_counter() - t0
    times = []
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
        conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            rec["error"] = f"HTTP {resp.status}: {resp.read()[:200]!r}"
            return
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            now = time.perf_counter() - t0
            d = json.loads(line[5:])
            if d.get("stop"):
                rec["timings"] = d.get("timings")
                rec["tokens_predicted"] = d.get("tokens_predicted")
                rec["tokens_evaluated"] = d.get("tokens_evaluated")
                if d.get("content"):
                    times.append(now)
                break
            times.append(now)
        conn.close()
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
        rec["error"] = repr(e)
    if times:
        rec["first_token_s"], rec["done_s"], rec["chunks"] = times[0], times[-1], len(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--rate", type=float, help="Poisson arrivals, requests/s")
    ap.add_argument("--concurrency", type=int, help="closed-loop clients")
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--prompt", type=int, required=True)
    ap.add_argument("--gen", type=int, required=True)
    ap.add_argument("--vocab", type=int, default=32000, help="token ids are drawn from [100, vocab)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--meta", default="{}", help="JSON conditions written to the first line")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    prompts = [[rng.randrange(100, a.vocab) for _ in range(a.prompt)] for _ in range(a.requests)]
    recs = [{"id": i, "prompt_tokens": a.prompt, "output_tokens": a.gen} for i in range(a.requests)]
    t0 = time.perf_counter()
    threads = []
    if a.rate:
        t = 0.0
        for i in range(a.requests):
            t += rng.expovariate(a.rate)
            delay = t - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
            th = threading.Thread(target=one_request, args=(a.url, prompts[i], a.gen, t0, recs[i]))
            th.start()
            threads.append(th)
    else:
        nxt = iter(range(a.requests))
        lock = threading.Lock()

        def client():
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                one_request(a.url, prompts[i], a.gen, t0, recs[i])

        threads = [threading.Thread(target=client) for _ in range(a.concurrency or 1)]
        for th in threads:
            th.start()
    for th in threads:
        th.join()
    meta = json.loads(a.meta)
    meta.update(rate=a.rate, concurrency=a.concurrency, requests=a.requests, prompt=a.prompt, gen=a.gen,
                seed=a.seed, wall_s=time.perf_counter() - t0)
    with open(a.out, "w") as f:
        f.write(json.dumps({"run": meta}) + "\n")
        for r in recs:
            f.write(json.dumps(r) + "\n")
    ok = [r for r in recs if "first_token_s" in r and "error" not in r]
    ttft = sorted(r["first_token_s"] - r["sent_s"] for r in ok)
    print(f"{a.out}: {len(ok)}/{a.requests} ok, TTFT p50 {ttft[len(ttft) // 2] * 1e3:.0f} ms" if ttft else f"{a.out}: none ok")


if __name__ == "__main__":
    main()
