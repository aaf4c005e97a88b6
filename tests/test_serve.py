"""`crosstune serve`: a real uvicorn server on a free loopback port, called over real HTTP (http.client)."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crosstune.data.truncation import cut_query
from crosstune.data.types import DataError
from crosstune.train.config import ServeConfig, load_config
from crosstune.train.ranking.pipeline import RankingPipeline
from crosstune.train.recipes.serve import listen, uvicorn_server
from crosstune.train.serving.app import build_app
from crosstune.train.serving.bodies import sigmoid

QUERY = "how long is location data kept?"
TEXTS = ["We retain location data for 18 months.", "The Buyer shall pay all invoices within thirty days.",
         "A landlord must not increase the rent more than once in any 12-month period.",
         "Location history is deleted after eighteen months unless you opt in to longer retention.",
         "This agreement is governed by the laws of Delaware."]


@pytest.fixture(scope="module")
def export(tiny_model, tmp_path_factory):
    """An export of the tiny BERT with a fresh one-logit head, written by `crosstune export` itself."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from crosstune.train.recipes.export import export_command

    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    source = root / "model"
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).save_pretrained(source)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(source)
    cfg = serve_cfg(tiny_model, root)
    return str(export_command(cfg, source=str(source))), cfg


def serve_cfg(tiny_model, root, *overrides):
    return load_config(Path(__file__).parent.parent / "configs" / "tiny.yaml",
                       [f"model.name={tiny_model}", f"run.root={root}",
                        f"data.path={Path(__file__).parent.parent / 'data' / 'demo'}", *overrides])


@pytest.fixture(scope="module")
def pipeline(export):
    return RankingPipeline.load(export[0], export[1])


@pytest.fixture(scope="module")
def search_pipeline(export):
    return RankingPipeline.load(export[0], export[1], search=True)


@contextlib.contextmanager
def running(pipeline, searchable=False, **limits):
    """A uvicorn server in a background thread on a free port; yields (host, port, app)."""
    app = build_app(pipeline, ServeConfig(**limits), searchable)
    sock = listen("127.0.0.1", 0)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(pipeline):
    with running(pipeline, max_texts=8, max_chars=500, max_body_bytes=4096) as s:
        yield s


def call(srv, method: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON body, headers) over a fresh connection."""
    conn = http.client.HTTPConnection(srv[0], srv[1], timeout=60)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, json.loads(payload), resp.headers  # case-insensitive
    finally:
        conn.close()


def by_index(hits) -> dict[int, float]:
    return {h.index: h.score for h in hits}


# ---------------------------------------------------------------- routes and parity


def test_tei_shape_returns_the_pipelines_scores(server, pipeline):
    expected = by_index(pipeline.rerank(QUERY, TEXTS))
    status, raw, _ = call(server, "POST", "/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True,
                                                       "return_text": True})
    assert status == 200 and isinstance(raw, list) and len(raw) == len(TEXTS)
    assert sorted(r["index"] for r in raw) == list(range(len(TEXTS)))
    assert [r["score"] for r in raw] == sorted((r["score"] for r in raw), reverse=True)
    for r in raw:
        assert r["score"] == pytest.approx(expected[r["index"]], abs=1e-5)
        assert r["text"] == TEXTS[r["index"]]
    # the default is TEI's: probabilities, a sigmoid of the logit (this pipeline does not fuse), no text
    status, probs, _ = call(server, "POST", "/rerank", {"query": QUERY, "texts": TEXTS})
    assert status == 200 and not pipeline.fusion.fused
    assert [p["index"] for p in probs] == [r["index"] for r in raw]
    for p in probs:
        assert set(p) == {"index", "score"}
        assert p["score"] == pytest.approx(sigmoid(expected[p["index"]]), abs=1e-6)


def test_cohere_and_infinity_shape(server, pipeline):
    logits = by_index(pipeline.rerank(QUERY, TEXTS))
    order = sorted(logits, key=lambda i: -logits[i])
    status, out, _ = call(server, "POST", "/rerank", {"query": QUERY, "documents": TEXTS, "top_n": 2,
                                                       "return_documents": True, "model": "anything"})
    assert status == 200
    assert [r["index"] for r in out["results"]] == order[:2]
    for r in out["results"]:
        assert r["relevance_score"] == pytest.approx(sigmoid(logits[r["index"]]), abs=1e-6)
        assert r["document"] == TEXTS[r["index"]]  # Infinity returns the document as a string
    assert out["model"] == pipeline.model and out["object"] == "rerank"
    tokens = sum(min(n, pipeline.max_length) for n in pipeline.pair_lengths(QUERY, TEXTS))
    assert out["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens} and tokens > len(TEXTS)
    # Cohere's SDKs call /v1/rerank and /v2/rerank, and read the document as {"text": ...}
    status, out, _ = call(server, "POST", "/v2/rerank", {"query": QUERY, "documents": TEXTS, "return_documents": True})
    assert status == 200 and len(out["results"]) == len(TEXTS)
    assert out["results"][0]["document"] == {"text": TEXTS[order[0]]}
    assert out["meta"]["api_version"]["version"] == "2" and "object" not in out
    status, out, _ = call(server, "POST", "/v1/rerank", {"query": QUERY, "documents": TEXTS})
    assert status == 200 and "document" not in out["results"][0] and out["meta"]["api_version"]["version"] == "1"
    status, out, _ = call(server, "POST", "/rerank", {"query": QUERY, "documents": TEXTS})
    assert status == 200 and all(r["document"] is None for r in out["results"])  # as Infinity answers


def test_a_fused_score_is_returned_as_it_is(pipeline):
    from crosstune.train.ranking.fusion import Fusion

    fused = pipeline.with_fusion(Fusion(weight=0.4, source="this test"))
    expected = by_index(fused.rerank(QUERY, TEXTS))
    assert expected != by_index(pipeline.rerank(QUERY, TEXTS))  # BM25 moved the scores
    with running(fused) as srv:
        for raw in (False, True):  # already in [0, 1]: no sigmoid, raw or not
            status, out, _ = call(srv, "POST", "/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": raw})
            assert status == 200
            assert {r["index"]: r["score"] for r in out} == {i: pytest.approx(v, abs=1e-5) for i, v in expected.items()}
        status, out, _ = call(srv, "POST", "/rerank", {"query": QUERY, "documents": TEXTS})
        assert {r["index"]: r["relevance_score"] for r in out["results"]} == {
            i: pytest.approx(v, abs=1e-5) for i, v in expected.items()}
    assert all(0 <= v <= 1 for v in expected.values())


def test_search_ranks_as_the_pipeline_and_needs_a_corpus(server, search_pipeline):
    status, out, _ = call(server, "POST", "/search", {"query": QUERY})
    assert status == 404 and out["error_type"] == "no_corpus" and "--config" in out["error"]
    expected = search_pipeline.search("how long does the running app keep where I have been?", 5)
    with running(search_pipeline, searchable=True) as srv:
        status, out, _ = call(srv, "POST", "/search", {"query": "how long does the running app keep where I have been?",
                                                        "top_k": 5, "return_text": True})
    assert status == 200 and len(out["results"]) == 5
    assert [r["id"] for r in out["results"]] == [h.doc_id for h in expected]
    for r, h in zip(out["results"], expected):
        assert r["score"] == pytest.approx(h.score, abs=1e-5) and r["title"] == h.title and r["text"] == h.text


def test_health_and_info(server, pipeline):
    assert call(server, "GET", "/health")[:2] == (200, {"status": "ok", "pending": 0})
    status, info, _ = call(server, "GET", "/info")
    assert status == 200
    assert info["limits"]["max_texts"] == 8 and info["search"] is False
    for key, value in pipeline.info().items():
        assert json.dumps(info[key], sort_keys=True) == json.dumps(value, sort_keys=True, default=str)


# ---------------------------------------------------------------- every bad request is a 4xx with our body

BAD = [  # (what, method, path, body or raw bytes, status, error_type, words in the message)
    ("malformed JSON", "POST", "/rerank", b'{"query": "x", "texts": [', 400, "invalid_json", "not valid JSON"),
    ("empty body", "POST", "/rerank", b"", 400, "invalid_json", "empty body"),
    ("not UTF-8", "POST", "/rerank", b'{"query": "\xff\xfe"}', 400, "invalid_json", "not valid JSON"),
    ("deep nesting", "POST", "/rerank", b"[" * 2000 + b"]" * 2000, 400, "invalid_json", "not valid JSON"),
    ("a list body", "POST", "/rerank", [QUERY], 422, "validation", "JSON list"),
    ("query not a string", "POST", "/rerank", {"query": 3, "texts": ["a"]}, 422, "validation", "'query' must be a string"),
    ("texts a string", "POST", "/rerank", {"query": "q", "texts": "a"}, 422, "validation", "list of strings"),
    ("a text not a string", "POST", "/rerank", {"query": "q", "texts": ["a", 2]}, 422, "validation", "texts[1]"),
    ("raw_scores a string", "POST", "/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, 422, "validation",
     "true or false"),
    ("top_n 0", "POST", "/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, "validation", "top_n"),
    ("top_n a boolean", "POST", "/rerank", {"query": "q", "documents": ["a"], "top_n": True}, 422, "validation", "top_n"),
    ("empty query", "POST", "/rerank", {"query": "  ", "texts": ["a"]}, 422, "validation", "'query' is empty"),
    ("no query", "POST", "/rerank", {"texts": ["a"]}, 422, "validation", "got null"),
    ("empty texts", "POST", "/rerank", {"query": "q", "texts": []}, 422, "validation", "'texts' is empty"),
    ("too many texts", "POST", "/rerank", {"query": "q", "documents": ["a"] * 9}, 422, "validation", "at most 8"),
    ("a text too long", "POST", "/rerank", {"query": "q", "texts": ["a" * 501]}, 422, "validation", "at most 500"),
    ("both shapes", "POST", "/rerank", {"query": "q", "texts": ["a"], "documents": ["a"]}, 422, "validation", "not both"),
    ("neither shape", "POST", "/rerank", {"query": "q"}, 422, "validation", "not neither"),
    ("unknown field", "POST", "/rerank", {"query": "q", "texts": ["a"], "top_n": 1}, 422, "validation", "'top_n'"),
    ("left truncation", "POST", "/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "Left"}, 422,
     "validation", "Right"),
    ("too long, truncate false", "POST", "/rerank", {"query": "q", "texts": ["short", "word " * 90], "truncate": False},
     413, "validation", "truncate"),
    ("oversized body", "POST", "/rerank", {"query": "q", "texts": ["a" * 400] * 12}, 413, "payload_too_large", "4,096"),
    ("search without a corpus", "POST", "/search", {"query": "q", "top_k": 9}, 404, "no_corpus", "corpus"),
    ("unknown route", "GET", "/nowhere", None, 404, "not_found", "/nowhere"),
    ("wrong method", "GET", "/rerank", None, 405, "method_not_allowed", "POST"),
    ("wrong method on info", "POST", "/info", {}, 405, "method_not_allowed", "GET"),
]


@pytest.mark.parametrize("what,method,path,body,status,error_type,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_gets_a_4xx_with_our_body_and_the_server_keeps_serving(
        server, what, method, path, body, status, error_type, words):
    raw = body if isinstance(body, bytes) else None
    got, out, _ = call(server, method, path, None if raw is not None else body, raw=raw)
    assert (got, out["error_type"]) == (status, error_type), out
    assert set(out) == {"error", "error_type"} and words in out["error"]
    assert call(server, "POST", "/rerank", {"query": QUERY, "texts": TEXTS[:2]})[0] == 200


def test_a_body_without_content_length_is_cut_at_the_limit(server):
    # chunked transfer: the size is only known while reading
    conn = http.client.HTTPConnection(server[0], server[1], timeout=60)
    body = json.dumps({"query": "q", "texts": ["b" * 400] * 12}).encode()
    conn.request("POST", "/rerank", body=iter([body[:2000], body[2000:]]), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error_type"] == "payload_too_large"
    conn.close()


# ---------------------------------------------------------------- a body too large: the 413 reaches every client

BIG_LIMIT = 5_000_000  # the body below is 3.6x this: inside the drain bound, and far more than socket buffers hold


def raw_exchange(srv, head: bytes, body_parts=(), wait_s: float = 60) -> tuple[int, dict, str, float]:
    """Send the head and every body part before reading a byte, as urllib and many SDKs do; then (status, JSON body,
    the raw head of the answer, seconds until the answer was complete)."""
    import socket

    with socket.create_connection(srv[:2], timeout=wait_s) as sock:
        start = time.time()
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed before answering: {data[:300]!r}"
            data += chunk
    head_out, _, payload = data.partition(b"\r\n\r\n")
    return int(head_out.split()[1]), json.loads(payload), head_out.decode().lower(), time.time() - start


def post_head(length: int | None, *extra: str) -> bytes:
    lines = ["POST /rerank HTTP/1.1", "Host: test", "Content-Type: application/json", "Connection: close", *extra,
             f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_client_that_sends_its_whole_body_first_reads_the_413(pipeline):
    import urllib.error
    import urllib.request

    body = json.dumps({"query": "q", "texts": ["a" * int(BIG_LIMIT * 3.6)]}).encode()
    with running(pipeline, max_body_bytes=BIG_LIMIT) as srv:
        # urllib: Content-Length and Connection: close, the whole body sent before it reads (the reset it met)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"http://{srv[0]}:{srv[1]}/rerank", data=body,
                                                          headers={"Content-Type": "application/json"}), timeout=60)
        out = json.loads(refused.value.read())
        assert refused.value.code == 413 and out["error_type"] == "payload_too_large" and "5,000,000" in out["error"]
        # chunked, no Content-Length: the size is only known while reading
        chunks = [b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536]) for i in range(0, len(body), 65536)]
        status, out, _, _ = raw_exchange(srv, post_head(None), [*chunks, b"0\r\n\r\n"])
        assert (status, set(out), out["error_type"]) == (413, {"error", "error_type"}, "payload_too_large")
        assert call(srv, "POST", "/rerank", {"query": QUERY, "texts": TEXTS[:2]})[0] == 200


@pytest.mark.parametrize("what,extra,length", [
    ("past the drain bound", (), 10 ** 12),
    ("waiting for 100 Continue", ("Expect: 100-continue",), 5000),
])
def test_a_body_not_worth_reading_is_refused_at_once_and_the_connection_closed(server, what, extra, length):
    # only the head is sent: an answer at all shows the server did not wait for the body
    status, out, head, _ = raw_exchange(server, post_head(length, *extra), wait_s=10)
    assert (status, out["error_type"]) == (413, "payload_too_large") and f"{length:,} bytes" in out["error"]
    assert "connection: close" in head and "100 continue" not in head


def test_a_body_that_trickles_in_is_drained_for_drain_s_at_most(server, monkeypatch):
    from crosstune.train.serving import app

    monkeypatch.setattr(app, "DRAIN_S", 0.5)
    status, out, head, seconds = raw_exchange(server, post_head(9000), [b"x" * 5000], wait_s=30)
    assert (status, out["error_type"]) == (413, "payload_too_large") and "connection: close" in head
    assert 0.4 < seconds < 20


# ---------------------------------------------------------------- each pair tokenized once a request


@contextlib.contextmanager
def pairs_tokenized(tokenizer):
    """Every (text, text_pair) the real tokenizer is called on while the block runs, through its own __call__."""
    seen: list[tuple[str, str]] = []
    real = type(tokenizer)

    def counting(self, text=None, text_pair=None, *args, **kwargs):
        if text_pair is not None:
            seen.extend(zip([text] if isinstance(text, str) else text,
                            [text_pair] if isinstance(text_pair, str) else text_pair))
        return real.__call__(self, text, text_pair, *args, **kwargs)

    tokenizer.__class__ = type(real.__name__, (real,), {"__call__": counting})
    try:
        yield seen
    finally:
        tokenizer.__class__ = real


@pytest.fixture(scope="module")
def onnx_pipeline(export):
    """The same model as an ONNX export, scored by onnxruntime."""
    from crosstune.train.recipes.export import export_command

    source = Path(export[1].run.root) / "model"  # where the export fixture saved the model it exported
    return RankingPipeline.load(str(export_command(export[1], source=str(source), fmt="onnx")), export[1])


LONG = "who may end the lease early, and how much notice must the tenant give the landlord in writing before?"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("budget", [0, 6])
def test_each_pair_is_tokenized_once_a_request_with_the_same_scores_and_usage(request, monkeypatch, backend, budget):
    pipe = request.getfixturevalue("pipeline" if backend == "torch" else "onnx_pipeline")
    monkeypatch.setattr(pipe.scorer, "max_query_tokens", budget)  # a query budget cuts the query's text first
    texts = [*TEXTS, "word " * 90, "lease " * 40]  # two are cut at max length 64
    expected = by_index(pipe.rerank(LONG, texts))
    uncut = pipe.pair_lengths(LONG, texts)
    usage = sum(min(n, pipe.max_length) for n in uncut)
    assert max(uncut) > pipe.max_length and usage > len(texts)
    query = cut_query(pipe.scorer.tokenizer, LONG, budget)
    assert (query == LONG) == (not budget)
    with running(pipe) as srv:
        for body, path in [({"query": LONG, "documents": texts, "raw_scores": True}, "/v2/rerank"),
                           ({"query": LONG, "texts": texts, "raw_scores": True, "truncate": False}, "/rerank")]:
            with pairs_tokenized(pipe.scorer.tokenizer) as seen:
                status, out, _ = call(srv, "POST", path, body)
            # each text once, beside the query (its first `budget` tokens' text under a budget)
            assert sorted(t for _, t in seen) == sorted(texts), "each (query, text) pair tokenized once"
            assert {q for q, _ in seen} == {query}
            if path == "/rerank":  # truncate=false and a pair past max length: refused, from the same count
                assert (status, out["error_type"]) == (413, "validation") and f"text {uncut.index(max(uncut))}" in out[
                    "error"]
                continue
            assert status == 200 and out["usage"] == {"prompt_tokens": usage, "total_tokens": usage}
            got = {r["index"]: r["relevance_score"] for r in out["results"]}
            assert got == {i: pytest.approx(s, abs=1e-6) for i, s in expected.items()}
    assert pipe.scorer.pair_tokens is None  # counting is switched off again


# ---------------------------------------------------------------- concurrency, batching, overload


def requests_for(n: int) -> list[dict]:
    return [{"query": f"{QUERY} {i}", "texts": TEXTS[i % 3:] + [f"passage number {i}"], "raw_scores": True}
            for i in range(n)]


@pytest.mark.parametrize("batching", [True, False])
def test_parallel_requests_are_batched_and_equal_sequential_ones(pipeline, batching):
    reqs = requests_for(24)
    expected = [by_index(pipeline.rerank(r["query"], r["texts"])) for r in reqs]
    with running(pipeline, batching=batching, batch_wait_ms=50) as srv:
        with ThreadPoolExecutor(len(reqs)) as pool:
            answers = list(pool.map(lambda r: call(srv, "POST", "/rerank", r), reqs))
        batches = srv[2].state.batcher.batches
    for (status, out, _), want in zip(answers, expected):
        assert status == 200
        assert {r["index"]: pytest.approx(want[r["index"]], abs=1e-5) for r in out} == want
    # 24 requests at once share pipeline calls when batching, and each gets its own call when not
    assert batches < len(reqs) / 2 if batching else batches == len(reqs)


class Held:
    """The real pipeline behind a gate: its worker waits until the test opens it, so a queue can build up."""

    def __init__(self, pipeline):
        self.pipeline, self.gate = pipeline, threading.Event()

    def __getattr__(self, name):
        return getattr(self.pipeline, name)

    def rerank_counted(self, requests, top_n=None):
        assert self.gate.wait(30)
        return self.pipeline.rerank_counted(requests, top_n)


def wait_pending(srv, n: int) -> None:
    deadline = time.time() + 10
    while call(srv, "GET", "/health")[1]["pending"] != n:
        assert time.time() < deadline, f"never saw {n} pending"
        time.sleep(0.01)


def test_a_full_queue_gets_429_and_a_late_answer_503_then_it_serves_again(pipeline):
    held = Held(pipeline)
    body = {"query": QUERY, "texts": TEXTS}
    with running(held, max_pending=1, timeout_s=1.0) as srv, ThreadPoolExecutor(1) as pool:
        first = pool.submit(call, srv, "POST", "/rerank", body)
        wait_pending(srv, 1)
        status, out, headers = call(srv, "POST", "/rerank", body)
        assert (status, out["error_type"]) == (429, "overloaded") and headers["Retry-After"] == "1"
        status, out, _ = first.result()
        assert (status, out["error_type"]) == (503, "timeout") and "serve.timeout_s" in out["error"]
        held.gate.set()
        status, out, _ = call(srv, "POST", "/rerank", body)
        assert status == 200 and len(out) == len(TEXTS)


# ---------------------------------------------------------------- config and the CLI


def test_serve_config_keys_are_checked():
    assert load_config(None, ["serve.max_texts=50"]).serve.max_texts == 50
    with pytest.raises(DataError, match="unknown config key 'serve.max_textz'"):
        load_config(None, ["serve.max_textz=50"])
    for bad, words in [("serve.port=0", "serve.port"), ("serve.timeout_s=0", "serve.timeout_s"),
                       ("serve.batch_wait_ms=-1", "serve.batch_wait_ms"), ("serve.host=", "serve.host")]:
        with pytest.raises(DataError, match=re.escape(words)):
            load_config(None, [bad])


def crosstune(*args) -> list[str]:
    return [str(Path(sys.executable).parent / "crosstune"), *args]


def test_the_cli_serves_an_export(export, pipeline):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # model.max_length: the pipeline takes it from the config (default 256), and the tiny BERT has 128 positions
    proc = subprocess.Popen(crosstune("serve", export[0], "--port", "0", "serve.batch_wait_ms=1", "model.max_length=64"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if found:
                break
        assert found, "".join(lines)
        srv = ("127.0.0.1", int(found.group(1)))
        status, out, _ = call(srv, "POST", "/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True})
        assert status == 200
        expected = by_index(pipeline.rerank(QUERY, TEXTS))
        assert {r["index"]: r["score"] for r in out} == {i: pytest.approx(s, abs=1e-5) for i, s in expected.items()}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stdout.read()


def test_the_cli_refuses_a_taken_port_and_a_missing_export_in_one_line(export, capsys):
    from crosstune.train.cli import main

    with contextlib.closing(listen("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", export[0], "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and len(err.strip().splitlines()) == 1
    assert main(["serve", str(Path(export[0]) / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "EXPORT=" in err and "nothing" in err and len(err.strip().splitlines()) == 1


def test_the_serve_extra_is_part_of_dev_and_pinned():
    import tomllib

    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "crosstune[serve]" in extras["dev"]
    pins = {line.split("==")[0].lower() for line in (root / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower() for r in extras["serve"]} <= pins
    assert {"starlette", "uvicorn"} <= {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower() for r in extras["serve"]}
