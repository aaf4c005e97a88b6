"""`crosstune serve EXPORT`: load the pipeline, bind the port, run the HTTP app (serving/) under uvicorn."""
from __future__ import annotations

import socket

from crosstune.data.types import DataError
from crosstune.train.artifact.machine import describe_machine
from crosstune.train.config import ServeConfig
from crosstune.train.serving.app import build_app


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is one line, not a failure minutes later.
    Port 0 takes a free one (printed at start)."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except (OSError, OverflowError) as e:  # OverflowError: a port past 65535
        raise DataError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another with --port "
                        "(or serve.port), or stop what holds it") from None


def uvicorn_server(app):
    import uvicorn

    # no access log: a line per request costs the loop time a busy server needs; errors still log
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))


def describe(pipeline, limits: ServeConfig, search_note: str, url: str) -> str:
    f = pipeline.fusion
    fusion = (f"fused: {f.weight} * BM25" + (f" + {f.biencoder_weight} * bi-encoder" if f.biencoder_weight else "")
              + f" + the cross-encoder ({f.source})") if f.fused else "the cross-encoder's logits"
    batching = (f"batches of up to {limits.batch_max_pairs} pairs, {limits.batch_wait_ms:g} ms wait"
                if limits.batching else "batching off")
    cascade = "".join(f"{s.name} top-{s.depth} -> " for s in pipeline.stages)
    cascade = f"; a cascade: BM25 -> {cascade}the model top-{pipeline.depth}" if cascade else ""
    return (f"serve | {pipeline.model} ({pipeline.format}, max length {pipeline.max_length}); ranks by {fusion}"
            f"{cascade}\n"
            f"serve | /search: {search_note}; {batching}; limits: {limits.max_texts} texts x {limits.max_chars} chars, "
            f"{limits.max_body_bytes:,} bytes, {limits.timeout_s:g} s, {limits.max_pending} pending\n"
            f"serve | listening on {url} (POST /rerank /search, GET /health /info); Ctrl-C stops")


def machine_warning(manifest: dict, here: str) -> str:
    """A cascade chosen under a latency budget on another machine: its costs, and so its choice, may not hold here."""
    c = manifest.get("cascade")
    if not c or not c.get("budget_ms") or c.get("machine") == here:
        return ""
    return (f"warning: the cascade was chosen for p95 <= {c['budget_ms']:g} ms on {c.get('machine')}, but this is "
            f"{here}: its latency here is unmeasured; choose again on this machine (crosstune choose --config X "
            f"eval.latency_budget_ms={c['budget_ms']:g}, then crosstune export --overwrite)")


def serve_command(model: str, cfg, pipeline_cfg, search: bool, host: str | None = None,
                  port: int | None = None) -> None:
    """Load the export (and with a config its corpus) and serve it until interrupted."""
    from crosstune.train.ranking.pipeline import RankingPipeline

    # 1. the address, before anything slow
    host = host or cfg.serve.host
    sock = listen(host, cfg.serve.port if port is None else port)
    bound = sock.getsockname()[1]
    # 2. the pipeline: the export with its manifest checked; with --config also the corpus and its BM25 index
    pipeline = RankingPipeline.load(model, pipeline_cfg, search=search, key="EXPORT")
    note = f"BM25 over {pipeline_cfg.data.path}, then the rerank" if search else "off (no --config naming a corpus)"
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    print(describe(pipeline, cfg.serve, note, url), flush=True)
    warning = machine_warning(pipeline.manifest, describe_machine())
    if warning:
        print(warning, flush=True)
    # 3. serve until Ctrl-C (uvicorn stops gracefully: requests in flight are answered)
    try:
        uvicorn_server(build_app(pipeline, cfg.serve, search)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the signal again once it has shut down gracefully
        pass
    print("serve | stopped", flush=True)
