"""The HTTP API's bodies, as pure functions: a request body checked into a dataclass (or a RequestError that names
the fix), and ranked hits shaped the way text-embeddings-inference, Infinity and Cohere clients read them.

Shapes: TEI `{"query", "texts", "raw_scores"?, "return_text"?, "truncate"?}` -> `[{"index", "score", "text"?}]`;
Infinity (on /rerank) and Cohere (on /v1/rerank, /v2/rerank) `{"query", "documents", "top_n"?, "return_documents"?,
"model"?}` -> `{"id", "results": [{"index", "relevance_score", "document"?}], "model", "usage", ...}`, where Infinity
returns the document as a string and Cohere as `{"text": ...}`. /search `{"query", "top_k"?, "return_text"?}` ->
`{"query", "model", "results": [{"id", "title", "score", "logit", "document", "source", "page", "last_page", "start",
"end", "text"?}]}`.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from crosstune.train.config import ServeConfig

TEI_KEYS = {"query", "texts", "raw_scores", "return_text", "truncate", "truncation_direction"}


COHERE_KEYS = {"query", "documents", "top_n", "return_documents", "model", "raw_scores", "truncate"}


SEARCH_KEYS = {"query", "top_k", "return_text"}


class RequestError(Exception):
    """A request the server refuses: the status, a short machine-readable type and a line that names the fix (and
    any headers the answer needs, e.g. Connection: close)."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.headers = status, error_type, message, headers or {}


def invalid(message: str) -> RequestError:
    return RequestError(422, "validation", message)


def parse_json(body: bytes) -> dict:
    if not body.strip():
        raise RequestError(400, "invalid_json", "empty body; send a JSON object such as {\"query\": ..., \"texts\": [...]}")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as e:  # ValueError covers bad UTF-8 too
        raise RequestError(400, "invalid_json", f"the body is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(value, dict):
        raise invalid(f"the body is a JSON {type(value).__name__}; send an object such as {{\"query\": ..., \"texts\": [...]}}")
    return value


def check_keys(body: dict, allowed: set[str], shape: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r} for the {shape} shape; it takes {', '.join(sorted(allowed))}")


def text_field(body: dict, key: str, max_chars: int) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise invalid(f"{key!r} must be a string, got {json_type(value)}")
    if not value.strip():
        raise invalid(f"{key!r} is empty; send the text to rank against")
    if len(value) > max_chars:
        raise invalid(f"{key!r} has {len(value):,} characters; this server takes at most {max_chars:,} (serve.max_chars)")
    return value


def texts_field(body: dict, key: str, limits: ServeConfig) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list):
        raise invalid(f"{key!r} must be a list of strings, got {json_type(value)}")
    if not value:
        raise invalid(f"{key!r} is empty; send at least one text to rank")
    if len(value) > limits.max_texts:
        raise invalid(f"{key!r} has {len(value):,} items; this server takes at most {limits.max_texts:,} a request "
                      "(serve.max_texts): split them over several requests")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise invalid(f"{key}[{i}] must be a string, got {json_type(text)}")
        if len(text) > limits.max_chars:
            raise invalid(f"{key}[{i}] has {len(text):,} characters; this server takes at most {limits.max_chars:,} "
                          "(serve.max_chars)")
    return value


def flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{key!r} must be true or false, got {json_type(value)}")
    return value


def count(body: dict, key: str, default: int | None, most: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid(f"{key!r} must be an integer >= 1, got {json.dumps(value)[:40]}")
    if value > most:
        raise invalid(f"{key!r}={value} is more than this server returns ({most}, serve.max_texts)")
    return value


def json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class RerankRequest:
    shape: str  # "tei" or "cohere"
    query: str
    texts: list[str]
    raw_scores: bool
    return_text: bool
    truncate: bool  # false: a pair longer than the model's max length is refused (413), as TEI does
    top_n: int | None


def parse_rerank(body: dict, limits: ServeConfig) -> RerankRequest:
    if ("texts" in body) == ("documents" in body):
        raise invalid("send either 'texts' (text-embeddings-inference's shape) or 'documents' "
                      "(Cohere's and Infinity's), not " + ("both" if "texts" in body else "neither"))
    tei = "texts" in body
    check_keys(body, TEI_KEYS if tei else COHERE_KEYS, "text-embeddings-inference" if tei else "Cohere/Infinity")
    if tei and body.get("truncation_direction", "Right") not in ("Right", "right"):
        raise invalid("truncation_direction must be 'Right': crosstune models are trained on passages cut at the end")
    if "model" in body and not isinstance(body["model"], str):
        raise invalid(f"'model' must be a string, got {json_type(body['model'])}")
    texts = texts_field(body, "texts" if tei else "documents", limits)
    return RerankRequest("tei" if tei else "cohere", text_field(body, "query", limits.max_chars), texts,
                         raw_scores=flag(body, "raw_scores", False),
                         return_text=flag(body, "return_text" if tei else "return_documents", False),
                         truncate=flag(body, "truncate", True),
                         top_n=None if tei else count(body, "top_n", None, limits.max_texts))


@dataclass(frozen=True)
class SearchRequest:
    query: str
    top_k: int
    return_text: bool


def parse_search(body: dict, limits: ServeConfig) -> SearchRequest:
    check_keys(body, SEARCH_KEYS, "/search")
    return SearchRequest(text_field(body, "query", limits.max_chars), count(body, "top_k", 10, limits.max_texts),
                         flag(body, "return_text", False))


@dataclass(frozen=True)
class Ranked:
    hits: list
    tokens: int | None  # tokens the model read (pairs cut to its max length), for usage


def sigmoid(x: float) -> float:
    # two branches: exp of a large positive number overflows
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def shown_score(hit, raw: bool, fused: bool) -> float:
    """TEI's and Cohere's scores are probabilities unless raw_scores: a sigmoid of the logit. A fused score is a
    weighted sum of per-query min-max normalised scores, already in [0, 1], and is returned as it is."""
    return hit.score if raw or fused else sigmoid(hit.score)


def tei_body(req: RerankRequest, hits: list, fused: bool) -> list[dict]:
    return [{"index": h.index, "score": shown_score(h, req.raw_scores, fused),
             **({"text": req.texts[h.index]} if req.return_text else {})} for h in hits]


def cohere_body(req: RerankRequest, ranked: Ranked, fused: bool, model: str, cohere_path: str | None) -> dict:
    """Infinity's body on /rerank (document a string, or null); Cohere's on /v1/rerank, /v2/rerank (document {"text"},
    or left out). `usage` counts the tokens the model read (Infinity counts characters there)."""
    results = []
    for h in ranked.hits[:req.top_n]:
        item = {"index": h.index, "relevance_score": shown_score(h, req.raw_scores, fused)}
        if cohere_path:  # Cohere leaves the key out unless asked; Infinity always has it, null unless asked
            if req.return_text:
                item["document"] = {"text": req.texts[h.index]}
        else:
            item["document"] = req.texts[h.index] if req.return_text else None
        results.append(item)
    out = {"id": str(uuid.uuid4()), "results": results, "model": model,
           "usage": {"prompt_tokens": ranked.tokens, "total_tokens": ranked.tokens}}
    if cohere_path:
        out["meta"] = {"api_version": {"version": cohere_path}, "billed_units": {"search_units": 1}}
    else:
        out.update(object="rerank", created=int(time.time()))
    return out


def search_body(req: SearchRequest, hits: list, model: str) -> dict:
    """Scores as the pipeline ranks (fused, else the logit); `logit` is the cross-encoder's alone, null for a
    passage past the rerank depth. Each hit says where it lies: its document, the file it was read from, the
    character offsets into the document's text and the pages they fall on (null where unknown)."""
    return {"query": req.query, "model": model,
            "results": [{"id": h.doc_id, "title": h.title, "score": h.score, "logit": h.logit, **place(h),
                         **({"text": h.text} if req.return_text else {})} for h in hits]}


PLACE_KEYS = ("document", "source", "page", "last_page", "start", "end")


def place(hit) -> dict:
    """A search hit's document, source, page, last_page, start and end; null for what is not known (a corpus entry
    read from no file has no source, a text file no pages)."""
    found = hit.location.as_dict() if hit.location is not None else {}
    return {key: None if found.get(key) == "" else found.get(key) for key in PLACE_KEYS}
