"""Serving under load: `crosstune serve` (batching on and off) and Infinity, the peer, serving the same export on
this machine in the same run, called by the same clients over loopback.

    python benchmarks/serve_load.py            # ~25 min on 2 cores; writes BENCHMARKS.md (section "serve")
    python benchmarks/serve_load.py --quick    # ~6 min: 60 requests or 60 s a server

Each server gets the same requests, in the same order, from `--clients` concurrent clients (one keep-alive
connection each): Infinity's /rerank body (`query`, `documents`: a legalbench-rag dev query and its BM25 top-100),
and a share (`--bad-share`) of malformed ones of each kind. All servers run at once; they are driven in turns of
`--slice` seconds, round after round, until each has had `--seconds` or used up `--requests` (requests in flight at
the end of a turn are still answered and counted): a shared machine that slows down part-way slows every server.
Infinity (`infinity-emb`) is installed by this script into its own virtualenv (checkpoints/infinity-venv), never
into the project's. Ends with one JSON line of figures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import LEGAL, ROOT, machine, pct, write_section  # noqa: E402

INFINITY = "infinity-emb[server,torch]==0.0.78"
INFINITY_VENV = ROOT / "checkpoints" / "infinity-venv"
MAX_BODY = 1_000_000  # our server's body limit in this run, so the oversized kind below is refused by size


def bad_requests(query: str, docs: list[str]) -> dict[str, tuple[str, str, bytes]]:
    """Malformed requests by kind: (method, path, body)."""
    good = json.dumps({"query": query, "documents": docs}).encode()
    return {
        "invalid JSON": ("POST", "/rerank", good[: len(good) // 2]),
        "wrong types": ("POST", "/rerank", json.dumps({"query": 42, "documents": "not a list"}).encode()),
        "empty query": ("POST", "/rerank", json.dumps({"query": "", "documents": docs}).encode()),
        "no documents": ("POST", "/rerank", json.dumps({"query": query, "documents": []}).encode()),
        "3,000 documents": ("POST", "/rerank", json.dumps({"query": query, "documents": ["x"] * 3000}).encode()),
        "2 MB body": ("POST", "/rerank", b"x" * 2_000_000),
        "unknown route": ("POST", "/nowhere", good),
    }


def make_requests(n: int, texts: int, bad_share: float, seed: int = 0) -> list[tuple[str, str, str, bytes]]:
    """(kind, method, path, body) x n: BM25 top-`texts` of legalbench-rag dev queries, malformed ones mixed in."""
    from crosstune.data.bm25 import BM25Config, BM25Index
    from crosstune.data.loading import DataConfig, load_corpus, load_split
    from crosstune.data.types import doc_text, ranked

    cfg = DataConfig(path=str(LEGAL))
    corpus = load_corpus(cfg)
    queries, _ = load_split(cfg, "dev", corpus)
    index = BM25Index.build(corpus, BM25Config(), progress=False)
    run = index.search(queries, texts)
    pool = [(queries[q], [doc_text(corpus[d]) for d in ranked(run[q])]) for q in sorted(run) if len(run[q]) == texts]
    random.Random(seed).shuffle(pool)
    kinds = sorted(bad_requests("", []))
    every = round(1 / bad_share) if bad_share > 0 else 0
    out = []
    for i in range(n):
        query, docs = pool[i % len(pool)]
        # evenly spread and cycling through the kinds: a short run still sends every kind early
        if every and i % every == every // 2:
            kind = kinds[(i // every) % len(kinds)]
            out.append((kind, *bad_requests(query, docs)[kind]))
        else:
            out.append(("good", "POST", "/rerank", json.dumps({"query": query, "documents": docs}).encode()))
    return out


def drive(port: int, requests: list, clients: int, seconds: float) -> list[dict]:
    """Send `requests` from `clients` threads until they are used up or `seconds` pass; one record per request."""
    records: list[dict] = []
    lock, next_i, stop_at = threading.Lock(), [0], time.perf_counter() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                i = next_i[0]
                if i >= len(requests) or time.perf_counter() > stop_at:
                    break
                next_i[0] += 1
            kind, method, path, body = requests[i]
            t0 = time.perf_counter()
            rec = {"i": i, "kind": kind}
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                rec["status"] = resp.status
                if resp.status == 200 and kind == "good":
                    rec["scores"] = {r["index"]: r["relevance_score"] for r in json.loads(payload)["results"]}
            except (OSError, http.client.HTTPException) as e:  # a dropped connection: counted, then reconnect
                rec["status"] = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            rec["s"] = time.perf_counter() - t0
            rec["end"] = time.perf_counter()
            with lock:
                records.append(rec)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def wait_ready(port: int, proc: subprocess.Popen, log: Path, limit: float = 900) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before serving:\n{log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"not serving after {limit:.0f} s:\n{log.read_text()[-2000:]}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server under test: started, warmed up, then driven in slices that take turns with the other servers'."""

    def __init__(self, name: str, cmd: list[str], port: int, log: Path, env: dict | None = None):
        self.name, self.port, self.log = name, port, log
        self.records: list[dict] = []
        self.wall = 0.0
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def ready(self, warm: list) -> None:
        wait_ready(self.port, self.proc, self.log)
        drive(self.port, warm, len(warm), 600)

    def slice(self, requests: list, clients: int, seconds: float) -> None:
        """The next requests of the sequence for `seconds` (those in flight then are still answered and counted)."""
        t0 = time.perf_counter()
        done = drive(self.port, requests[len(self.records):], clients, seconds)
        for r in done:
            r["i"] += len(self.records)
        self.records += done
        self.wall += max((r["end"] for r in done), default=t0) - t0

    def info(self) -> dict:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn.request("GET", "/info")
            resp = conn.getresponse()
            return json.loads(resp.read()) if resp.status == 200 else {}
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def install_infinity() -> tuple[Path | None, str]:
    """(infinity_emb executable, "") or (None, why not). The project's constraints pin torch to the CPU build."""
    exe = INFINITY_VENV / "bin" / "infinity_emb"
    if exe.exists():
        return exe, ""
    steps = [[sys.executable, "-m", "venv", str(INFINITY_VENV)],
             [str(INFINITY_VENV / "bin" / "pip"), "install", "-q", INFINITY, "torch==2.13.0"]]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
            return None, f"`{' '.join(step[-3:])}` failed: " + " / ".join(tail)
    return (exe, "") if exe.exists() else (None, f"{INFINITY} installed no infinity_emb command")


def summarise(server: Server, texts: int) -> dict:
    name, recs, run = server.name, server.records, {"wall": server.wall, "info": server.info(),
                                                       "alive": server.proc.poll() is None}
    good = [r for r in recs if r["kind"] == "good"]
    ok = [r for r in good if r["status"] == 200]
    lat = [r["s"] for r in ok]
    bad = Counter((r["kind"], str(r["status"])) for r in recs if r["kind"] != "good")
    statuses = Counter(str(r["status"]) for r in recs)
    return {"name": name, "sent": len(recs), "good": len(good), "ok": len(ok), "wall": run["wall"],
            "rps": len(ok) / run["wall"] if run["wall"] else 0.0, "docs_s": len(ok) * texts / run["wall"] if run["wall"] else 0.0,
            "p50": pct(lat, 50) if lat else None, "p95": pct(lat, 95) if lat else None, "p99": pct(lat, 99) if lat else None,
            "5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
            "dropped": sum(n for s, n in statuses.items() if not s.isdigit()),
            "good_failed": Counter(str(r["status"]) for r in good if r["status"] != 200),
            "bad": bad, "scores": {r["i"]: r["scores"] for r in ok}, "info": run["info"], "alive": run["alive"]}


def score_gap(a: dict, b: dict) -> str:
    """The largest difference between two servers' scores of the same text of the same request: both serve one
    model, so only float noise (another batch, another padding) should separate them."""
    common = set(a["scores"]) & set(b["scores"])
    if not common:
        return "no request answered by both"
    gap = max(abs(a["scores"][i][d] - b["scores"][i].get(d, float("inf"))) for i in common for d in a["scores"][i])
    return f"at most {gap:.1e} over {len(common)} requests"


def ms(v) -> str:
    return f"{v * 1000:,.0f}" if v is not None else "-"


def table(results: list[dict], texts: int) -> str:
    rows = [f"| {r['name']} | {r['ok']:,} / {r['good']:,} | {r['rps']:.2f} | {r['docs_s']:,.0f} | {ms(r['p50'])} | "
            f"{ms(r['p95'])} | {ms(r['p99'])} | {r['5xx']} | {r['dropped']} | "
            f"{', '.join(f'{s} x{n}' for s, n in sorted(r['good_failed'].items())) or 'none'} |" for r in results]
    return ("| server | good requests answered 200 / sent | requests/s | docs/s | p50 ms | p95 ms | p99 ms | 5xx | "
            "dropped connections | good requests refused |\n|---|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows))


def bad_table(results: list[dict]) -> str:
    kinds = sorted({k for r in results for k, _ in r["bad"]})
    head = "| malformed kind | " + " | ".join(r["name"] for r in results) + " |\n|---|" + "---|" * len(results)
    rows = []
    for kind in kinds:
        cells = [", ".join(f"{s} x{n}" for (k, s), n in sorted(r["bad"].items()) if k == kind) or "-" for r in results]
        rows.append(f"| {kind} | " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(rows)


def start_infinity(model: str, tmp: Path, notes: list[str]) -> list[Server]:
    exe, why = install_infinity()
    if exe is None:
        notes.append(f"Infinity could not be installed here: {why}")
        return []
    port = free_port()
    cmd = [str(exe), "v2", "--model-id", model, "--host", "127.0.0.1", "--port", str(port), "--engine", "torch",
           "--device", "cpu", "--log-level", "warning"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    print(f"serve_load | Infinity: {' '.join(cmd[1:])}", flush=True)
    return [Server(f"Infinity {INFINITY.split('==')[1]}", cmd, port, tmp / "infinity.log", env)]


def exported_fusion(model: str) -> str:
    """'' when the export ranks by its cross-encoder alone, else its fusion in words."""
    from crosstune.train.artifact.manifest import read_manifest

    f = read_manifest(model).get("fusion") or {}
    if not (f.get("weight") or f.get("biencoder_weight")):
        return ""
    return f"{f.get('weight') or 0} * BM25 + {f.get('biencoder_weight') or 0} * bi-encoder + the rest * cross-encoder"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 requests a system, 60 s windows (~6 min in all)")
    ap.add_argument("--model", default=None, help="the export both servers load (default: checkpoints/legal/export)")
    ap.add_argument("--requests", type=int, default=3000, help="requests per system, malformed ones included")
    ap.add_argument("--seconds", type=float, default=300, help="each server's time, in slices taking turns")
    ap.add_argument("--slice", type=float, default=30, help="seconds a server is driven before the next takes its turn")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients, one keep-alive connection each")
    ap.add_argument("--texts", type=int, default=100, help="documents per request")
    ap.add_argument("--bad-share", type=float, default=None,
                    help="share of malformed requests (default 0.1; --quick 1/3, so a short run still sends every kind)")
    ap.add_argument("--skip-infinity", action="store_true", help="measure crosstune only")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.seconds, args.slice = min(args.requests, 60), min(args.seconds, 60), min(args.slice, 15)
    if args.bad_share is None:
        args.bad_share = 1 / 3 if args.quick else 0.1
    requests = make_requests(args.requests, args.texts, args.bad_share)
    notes: list[str] = []
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from benchmarks.speed import default_model

        model = args.model or default_model(tmp)
        fusion = exported_fusion(model)
        crosstune = str(Path(sys.executable).parent / "crosstune")
        # timeout_s past the window: a closed loop of clients queues at most `clients` requests, and this run
        # measures throughput and latency, not the timeout. The cross-encoder alone, as Infinity serves it: the same
        # work on both sides; an export that fuses is measured as exported too, in its own row
        base = [crosstune, "serve", model, f"serve.max_body_bytes={MAX_BODY}", f"serve.timeout_s={args.seconds + 600:g}"]
        alone = ["eval.fusion_weight=0", "eval.biencoder_weight=0"]
        systems = [("crosstune serve, batching on", base + alone + ["serve.batching=true"]),
                   ("crosstune serve, batching off", base + alone + ["serve.batching=false"])]
        if fusion:
            systems.append(("crosstune serve, batching on, fused as exported", base + ["serve.batching=true"]))
        try:
            for name, cmd in systems:
                port = free_port()
                print(f"serve_load | {name}: {' '.join(cmd[1:])} --port {port}", flush=True)
                servers.append(Server(name, cmd + ["--port", str(port)], port, tmp / f"{len(servers)}.log"))
            if args.skip_infinity:
                notes.append("Infinity was skipped (`--skip-infinity`).")
            else:
                servers += start_infinity(model, tmp, notes)
            warm = [r for r in requests if r[0] == "good"][: args.clients]
            for server in list(servers):
                try:
                    server.ready(warm)
                except RuntimeError as e:
                    if not server.name.startswith("Infinity"):
                        raise
                    lines = str(e).splitlines()
                    notes.append(f"Infinity could not serve the export offline: {lines[0]} " + " / ".join(lines[-4:]))
                    server.stop()
                    servers.remove(server)
            # the servers take turns, slice by slice, each in its own order each round: a machine that slows down
            # or speeds up part-way (these are shared) weighs on every server alike
            rounds = max(1, round(args.seconds / args.slice))
            for r in range(rounds):
                for server in servers[r % len(servers):] + servers[:r % len(servers)]:
                    if len(server.records) < len(requests):
                        server.slice(requests, args.clients, args.seconds / rounds)
                print(f"serve_load | round {r + 1}/{rounds}: " + ", ".join(
                    f"{s.name} {len(s.records)}" for s in servers), flush=True)
            results = [summarise(s, args.texts) for s in servers]
        finally:
            for server in servers:
                server.stop()
    write(results, notes, model, fusion, args)


def write(results: list[dict], notes: list[str], model: str, fusion: str, args) -> None:
    on, off = results[0], results[1]
    peer = next((r for r in results if r["name"].startswith("Infinity")), None)
    fused = next((r for r in results if "fused" in r["name"]), None)
    batches = on["info"].get("batches_run")
    figures = {"serve_rps_batching": round(on["rps"], 3), "serve_rps_no_batching": round(off["rps"], 3),
               "batching_x": round(on["rps"] / off["rps"], 2) if off["rps"] else None,
               "serve_p95_s": round(on["p95"], 3) if on["p95"] else None,
               "serve_5xx": sum(r["5xx"] for r in results if r is not peer),
               "serve_dropped": sum(r["dropped"] for r in results if r is not peer),
               "infinity_rps": round(peer["rps"], 3) if peer else None,
               "vs_infinity_x": round(on["rps"] / peer["rps"], 2) if peer and peer["rps"] else None,
               "fused_rps": round(fused["rps"], 3) if fused else None}
    command = f"python benchmarks/serve_load.py{' --quick' if args.quick else ''}"
    agree = f"batching off {score_gap(on, off)}" + (f"; Infinity {score_gap(on, peer)}" if peer else "")
    body = f"""## Serving under load (`{command}`)

Machine: {machine()}. The servers ran on it together, driven in turns of {args.slice:g} s round after round (so a
machine that slows down part-way slows each alike), each sent the same requests in the same order by
{args.clients} concurrent clients over loopback (one keep-alive connection each, a closed loop: a client sends its
next request when its last is answered). Model: `{model}`, max length 256, fp32, scoring batches of 32 on both
sides. Each good request is Infinity's /rerank body, a legalbench-rag dev query and its BM25 top-{args.texts};
{args.bad_share:.0%} are malformed (kinds below). A server's run ends after {args.requests:,} requests or
{args.seconds:g} s of turns, whichever comes first. Latency is per good request, queueing included; docs/s counts the
documents of good requests answered 200. crosstune ranks by the cross-encoder alone here (`eval.fusion_weight=0
eval.biencoder_weight=0`), the work Infinity does{f"; the fused row serves the export as it ranks ({fusion}), which adds the bi-encoder's embeddings of every text" if fusion else ""}.

{table(results, args.texts)}

Batching on: {f"{batches:,} pipeline calls for {on['ok'] + args.clients:,} good requests (warm-up included)" if batches else "its /info was not read"};
**{figures['batching_x']}x** the throughput of batching off{f", **{figures['vs_infinity_x']}x** Infinity's" if figures['vs_infinity_x'] else ""}.
Scores (sigmoid of the logit on every side) against crosstune with batching on, for the good requests both
answered: {agree}.

Malformed requests, the status each server answered (every crosstune body is `{{"error", "error_type"}}`; crosstune
refuses a body over {MAX_BODY:,} bytes in this run, `serve.max_body_bytes`):

{bad_table(results)}

{" ".join(notes)}
"""
    write_section("serve", body)
    print(body)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
