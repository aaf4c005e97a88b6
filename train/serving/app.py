"""`crosstune serve EXPORT`: a thin HTTP face over the ranking pipeline (Starlette under uvicorn).

The server never ranks on its own: every score comes from `RankingPipeline.rerank_many` / `search_many`, called
from one worker thread by the micro-batcher (train/microbatch.py). train/api.py checks the bodies and shapes the
answers; this module keeps every refusal a JSON `{"error", "error_type"}` with a 4xx status (429 / 503 under
overload) and runs the server.

POST /rerank is told apart by its body: `texts` is text-embeddings-inference's shape, `documents` Infinity's
(Cohere's results with the document as a plain string); /v1/rerank and /v2/rerank, the paths Cohere's SDKs call,
answer in Cohere's shape (the document as {"text": ...}).
"""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from crosstune.data.types import DataError
from crosstune.train.config import ServeConfig
from crosstune.train.serving.bodies import (
    Ranked,
    RequestError,
    RerankRequest,
    SearchRequest,
    cohere_body,
    invalid,
    parse_json,
    parse_rerank,
    parse_search,
    search_body,
    tei_body,
)
from crosstune.train.serving.microbatch import MicroBatcher, Overloaded


def run_batch(pipeline, jobs: list) -> list:
    """One pipeline call per kind for the whole batch: RerankRequest -> Ranked, SearchRequest -> hits.
    A pair too long for a request that asked not to truncate is that request's RequestError."""
    out: list[Any] = [None] * len(jobs)
    rerank = []
    for i, job in enumerate(jobs):
        if not isinstance(job, RerankRequest):
            continue
        # token counts only where they are used: usage for the Cohere shape, the check for truncate=false
        lengths = pipeline.pair_lengths(job.query, job.texts) if job.shape == "cohere" or not job.truncate else None
        longest = max(range(len(lengths)), key=lengths.__getitem__) if lengths else None
        if not job.truncate and lengths[longest] > pipeline.max_length:
            out[i] = RequestError(413, "validation", f"text {longest} and the query make {lengths[longest]} tokens; "
                                  f"the model reads at most {pipeline.max_length} (send \"truncate\": true to cut it)")
            continue
        rerank.append((i, sum(min(n, pipeline.max_length) for n in lengths) if lengths else None))
    if rerank:
        ranked = pipeline.rerank_many([(jobs[i].query, jobs[i].texts) for i, _ in rerank])
        for (i, tokens), hits in zip(rerank, ranked):
            out[i] = Ranked(hits, tokens)
    by_k: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        if isinstance(job, SearchRequest):
            by_k.setdefault(job.top_k, []).append(i)
    for k, idx in by_k.items():
        for i, hits in zip(idx, pipeline.search_many([jobs[i].query for i in idx], k)):
            out[i] = hits
    return out


async def read_body(request, limit: int) -> bytes:
    """The body, refused once it passes `limit` bytes: by its Content-Length before reading, else while reading."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "payload_too_large", f"the body has {int(declared):,} bytes; this server takes at most "
                           f"{limit:,} (serve.max_body_bytes)")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "payload_too_large", f"the body passes {limit:,} bytes (serve.max_body_bytes)")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer; a 4xx keeps it out of the error log
        raise RequestError(400, "client_disconnected", "the client left before sending its whole body") from None
    return b"".join(chunks)


def error_response(status: int, error_type: str, message: str, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


def build_app(pipeline, limits: ServeConfig, searchable: bool):
    """The Starlette app over a loaded pipeline; the batcher starts and stops with the app's lifespan."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    batcher = MicroBatcher(lambda jobs: run_batch(pipeline, jobs), limits.batch_max_pairs,
                           limits.batch_wait_ms / 1000, limits.max_pending, limits.batching)
    fused = pipeline.fusion.fused

    async def submit(job, size: int):
        try:
            result = await batcher.submit(job, size, limits.timeout_s)
        except Overloaded:
            raise RequestError(429, "overloaded", f"{limits.max_pending} requests are already waiting "
                               "(serve.max_pending); retry shortly") from None
        except asyncio.TimeoutError:
            raise RequestError(503, "timeout", f"not answered within {limits.timeout_s:g} s (serve.timeout_s); the "
                               "server is busy, retry shortly") from None
        except DataError as e:  # the pipeline refused this input
            raise invalid(str(e)) from None
        if isinstance(result, RequestError):
            raise result
        return result

    def rerank_route(cohere_path: str | None):
        async def endpoint(request):
            req = parse_rerank(parse_json(await read_body(request, limits.max_body_bytes)), limits)
            ranked = await submit(req, len(req.texts))
            if req.shape == "tei":
                return JSONResponse(tei_body(req, ranked.hits, fused))
            return JSONResponse(cohere_body(req, ranked, fused, pipeline.model, cohere_path))
        return endpoint

    async def search(request):
        if not searchable:
            raise RequestError(404, "no_corpus", "this server has no corpus to search; start it with --config naming "
                               "one (data.path) to enable /search, or call /rerank with your own texts")
        req = parse_search(parse_json(await read_body(request, limits.max_body_bytes)), limits)
        return JSONResponse(search_body(req, await submit(req, max(req.top_k, pipeline.depth)), pipeline.model))

    async def health(request):
        return JSONResponse({"status": "ok", "pending": batcher.pending})

    async def info(request):
        body = {**pipeline.info(), "search": searchable, "limits": asdict(limits), "batches_run": batcher.batches}
        return JSONResponse(json.loads(json.dumps(body, default=str)))

    async def refused(request, exc: RequestError):
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return error_response(exc.status, exc.error_type, exc.message, headers)

    async def http_error(request, exc: HTTPException):
        if exc.status_code == 404:
            return error_response(404, "not_found", f"no route {request.url.path}; routes: POST /rerank, POST /search, "
                                  "GET /health, GET /info")
        if exc.status_code == 405:
            return error_response(405, "method_not_allowed", f"{request.method} {request.url.path} is not served; "
                                  f"use {exc.headers.get('Allow', '?') if exc.headers else '?'}", exc.headers)
        return error_response(exc.status_code, "http", str(exc.detail))

    async def internal(request, exc: Exception):
        return error_response(500, "internal", f"{type(exc).__name__}: {str(exc)[:200]} (a bug: please report it)")

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    routes = [Route("/rerank", rerank_route(None), methods=["POST"]),
              Route("/v1/rerank", rerank_route("1"), methods=["POST"]),
              Route("/v2/rerank", rerank_route("2"), methods=["POST"]),
              Route("/search", search, methods=["POST"]),
              Route("/health", health, methods=["GET"]),
              Route("/info", info, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={RequestError: refused, HTTPException: http_error, Exception: internal})
    app.state.batcher = batcher
    return app
