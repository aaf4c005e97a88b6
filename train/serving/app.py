"""`crosstune serve EXPORT`: a thin HTTP face over the ranking pipeline (Starlette; recipes/serve.py runs it).

The server never ranks on its own: every score comes from `RankingPipeline.rerank_counted` / `search_many`, called
from one worker thread by the micro-batcher (serving/microbatch.py). serving/bodies.py checks the bodies and shapes
the answers; this module keeps every refusal a JSON `{"error", "error_type"}` with a 4xx status (429 / 503 under
overload).

POST /rerank is told apart by its body: `texts` is text-embeddings-inference's shape, `documents` Infinity's
(Cohere's results with the document as a plain string); /v1/rerank and /v2/rerank, the paths Cohere's SDKs call,
answer in Cohere's shape (the document as {"text": ...}).
"""
from __future__ import annotations

import asyncio
import functools
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

# a body refused as too large is still read (and dropped) up to this many times serve.max_body_bytes, or for this
# many seconds, whichever comes first: see drain
DRAIN_FACTOR = 4
DRAIN_S = 5.0


# -- the worker's side: one pipeline call per kind for a whole batch ---------------------------------------------------
def run_batch(pipeline, jobs: list) -> list:
    """RerankRequest -> Ranked, SearchRequest -> hits; a pair too long for a request that asked not to truncate is
    that request's RequestError."""
    out: list[Any] = [None] * len(jobs)
    rerank = [i for i, job in enumerate(jobs) if isinstance(job, RerankRequest)]
    if rerank:
        # each pair is tokenized once: the scorer counts the tokens (usage, truncate=false) as it tokenizes to score
        hits, lengths = pipeline.rerank_counted([(jobs[i].query, jobs[i].texts) for i in rerank])
        for i, ranked, counts in zip(rerank, hits, lengths):
            out[i] = answer(jobs[i], ranked, counts, pipeline.max_length)
    by_k: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        if isinstance(job, SearchRequest):
            by_k.setdefault(job.top_k, []).append(i)
    for k, idx in by_k.items():
        for i, found in zip(idx, pipeline.search_many([jobs[i].query for i in idx], k)):
            out[i] = found
    return out


def answer(job: RerankRequest, hits: list, lengths: list[int], max_length: int) -> Ranked | RequestError:
    """The ranked texts with the tokens the model read (each pair cut to its max length), or, for truncate=false,
    the refusal of the longest pair past that length (its texts were scored with the batch's; nothing is returned)."""
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if not job.truncate and lengths[longest] > max_length:
        return RequestError(413, "validation", f"text {longest} and the query make {lengths[longest]} tokens; the "
                            f"model reads at most {max_length} (send \"truncate\": true to cut it)")
    return Ranked(hits, sum(min(n, max_length) for n in lengths))


# -- request bodies ----------------------------------------------------------------------------------------------------
async def read_body(request, limit: int) -> bytes:
    """The body, refused once it passes `limit` bytes: by its Content-Length before reading, else while reading."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        # a client waiting for "100 Continue" has sent no body, and one past the drain bound is cut off anyway
        waits = request.headers.get("expect", "").lower() == "100-continue"
        ended = not waits and int(declared) <= DRAIN_FACTOR * limit and await drain(request.stream(), 0, limit)
        raise too_large(f"the body has {int(declared):,} bytes; this server takes at most {limit:,} "
                        "(serve.max_body_bytes)", ended)
    chunks, size = [], 0
    stream = request.stream()
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                ended = await drain(stream, size, limit)
                raise too_large(f"the body passes {limit:,} bytes (serve.max_body_bytes)", ended)
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer; a 4xx keeps it out of the error log
        raise RequestError(400, "client_disconnected", "the client left before sending its whole body") from None
    return b"".join(chunks)


async def drain(stream, size: int, limit: int) -> bool:
    """Read and drop the rest of a refused body (`size` bytes read so far), up to DRAIN_FACTOR * `limit` bytes in all
    or DRAIN_S seconds; True when the body ended within that. A client that sends its whole body before it reads
    (urllib, many SDKs) would otherwise meet a socket closed on unread bytes, which the kernel answers with a reset,
    and never see the 413: a lingering close, as nginx does."""
    from starlette.requests import ClientDisconnect

    async def rest() -> bool:
        nonlocal size
        async for chunk in stream:
            size += len(chunk)
            if size > DRAIN_FACTOR * limit:
                return False
        return True

    try:
        return await asyncio.wait_for(rest(), DRAIN_S)
    except (asyncio.TimeoutError, ClientDisconnect):
        return False


def too_large(message: str, ended: bool) -> RequestError:
    # a body not read to its end leaves the connection unusable: say it closes, so the client does not reuse it
    return RequestError(413, "payload_too_large", message, None if ended else {"Connection": "close"})


# -- responses and the errors every route shares -----------------------------------------------------------------------
def json_response(body, status: int = 200, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


def error_response(status: int, error_type: str, message: str, headers: dict | None = None):
    return json_response({"error": message, "error_type": error_type}, status, headers)


async def refused(request, exc: RequestError):
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else {}
    return error_response(exc.status, exc.error_type, exc.message, {**headers, **exc.headers} or None)


async def http_error(request, exc):
    """Starlette's own 404 / 405 (an HTTPException), in our body."""
    if exc.status_code == 404:
        return error_response(404, "not_found", f"no route {request.url.path}; routes: POST /rerank, POST /search, "
                              "GET /health, GET /info")
    if exc.status_code == 405:
        allowed = exc.headers.get("Allow", "?") if exc.headers else "?"
        return error_response(405, "method_not_allowed", f"{request.method} {request.url.path} is not served; use "
                              f"{allowed}", exc.headers)
    return error_response(exc.status_code, "http", str(exc.detail))


async def internal(request, exc: Exception):
    return error_response(500, "internal", f"{type(exc).__name__}: {str(exc)[:200]} (a bug: please report it)")


# -- the routes over one pipeline ---------------------------------------------------------------------------------------
class Endpoints:
    """The route handlers over a loaded pipeline, its limits and the micro-batcher that calls it."""

    def __init__(self, pipeline, limits: ServeConfig, searchable: bool):
        self.pipeline, self.limits, self.searchable = pipeline, limits, searchable
        self.batcher = MicroBatcher(functools.partial(run_batch, pipeline), limits.batch_max_pairs,
                                    limits.batch_wait_ms / 1000, limits.max_pending, limits.batching)

    async def submit(self, job, size: int):
        """The job's result from the batcher; overload, a timeout and the pipeline's refusals as RequestErrors."""
        limits = self.limits
        try:
            result = await self.batcher.submit(job, size, limits.timeout_s)
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

    def rerank(self, cohere_path: str | None):
        """POST /rerank (cohere_path None: TEI's or Infinity's shape) or /v{cohere_path}/rerank (Cohere's)."""
        async def endpoint(request):
            req = parse_rerank(parse_json(await read_body(request, self.limits.max_body_bytes)), self.limits)
            ranked = await self.submit(req, len(req.texts))
            fused = self.pipeline.fusion.fused
            if req.shape == "tei":
                return json_response(tei_body(req, ranked.hits, fused))
            return json_response(cohere_body(req, ranked, fused, self.pipeline.model, cohere_path))
        return endpoint

    async def search(self, request):
        if not self.searchable:
            raise RequestError(404, "no_corpus", "this server has no corpus to search; start it with --config naming "
                               "one (data.path) to enable /search, or call /rerank with your own texts")
        req = parse_search(parse_json(await read_body(request, self.limits.max_body_bytes)), self.limits)
        hits = await self.submit(req, max(req.top_k, self.pipeline.depth))
        return json_response(search_body(req, hits, self.pipeline.model))

    async def health(self, request):
        return json_response({"status": "ok", "pending": self.batcher.pending})

    async def info(self, request):
        body = {**self.pipeline.info(), "search": self.searchable, "limits": asdict(self.limits),
                "batches_run": self.batcher.batches}
        return json_response(json.loads(json.dumps(body, default=str)))

    @asynccontextmanager
    async def lifespan(self, app):
        await self.batcher.start()
        yield
        await self.batcher.stop()

    def routes(self) -> list:
        from starlette.routing import Route

        return [Route("/rerank", self.rerank(None), methods=["POST"]),
                Route("/v1/rerank", self.rerank("1"), methods=["POST"]),
                Route("/v2/rerank", self.rerank("2"), methods=["POST"]),
                Route("/search", self.search, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/info", self.info, methods=["GET"])]


def build_app(pipeline, limits: ServeConfig, searchable: bool):
    """The Starlette app over a loaded pipeline; the batcher starts and stops with the app's lifespan."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException

    endpoints = Endpoints(pipeline, limits, searchable)
    app = Starlette(routes=endpoints.routes(), lifespan=endpoints.lifespan,
                    exception_handlers={RequestError: refused, HTTPException: http_error, Exception: internal})
    app.state.batcher = endpoints.batcher
    return app
