"""A bi-encoder's cosine similarity as a second cheap signal beside BM25, fused with the cross-encoder's score.

all-MiniLM-L6-v2 (our base weights, as the sentence-transformers bi-encoder it was trained as) is strong
zero-shot on legal text; fused with BM25 and the fine-tuned cross-encoder it adds evidence neither has.
Passage embeddings do not depend on the query, so they are cached on disk by the passage text's hash: a
passage is encoded once per model, and each later query costs one short encoder pass.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from crosstune.data.types import Corpus, Queries, Run, doc_text, ranked
from crosstune.train.artifact.model import resolve_model


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


class EmbeddingCache:
    """text hash -> unit embedding, in <folder>/embeddings.npy + keys.json, rewritten atomically when it grows.
    Without a folder (a server reranking texts its clients bring) it lives in memory and starts over when full."""

    MEMORY_LIMIT = 200_000  # ~300 MB of 384-d float32 vectors

    def __init__(self, folder: Path | None):
        self.folder, self.vectors = folder, {}
        if folder is not None and (folder / "keys.json").exists():
            keys = json.loads((folder / "keys.json").read_text())
            matrix = np.load(folder / "embeddings.npy")
            if len(keys) == len(matrix):  # a mismatch means a torn write: start over rather than misread
                self.vectors = dict(zip(keys, matrix))

    def save(self) -> None:
        if self.folder is None or not self.vectors:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        tmp_m, tmp_k = self.folder / ".embeddings.tmp.npy", self.folder / ".keys.json.tmp"
        np.save(tmp_m, np.stack([self.vectors[k] for k in keys]))
        tmp_k.write_text(json.dumps(keys))
        tmp_m.replace(self.folder / "embeddings.npy")
        tmp_k.replace(self.folder / "keys.json")


class BiEncoderScorer:
    def __init__(self, name: str, cache_dir: Path | None = None, device: str | None = None, batch_size: int = 64,
                 progress: bool = False, folder: str | None = None):
        """`folder`: where to load `name` from when the caller has resolved (and verified) it already."""
        from sentence_transformers import SentenceTransformer

        self.name, self.batch_size, self.progress = name, batch_size, progress
        self.model = SentenceTransformer(str(folder or resolve_model(name)), device=device)
        # one cache per model: the folder name carries a hash of the model's id or path
        self.cache = EmbeddingCache(Path(cache_dir) / text_key(name) if cache_dir else None)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in self.cache.vectors}.items())
        if todo:
            if self.cache.folder is None and len(self.cache.vectors) + len(todo) > self.cache.MEMORY_LIMIT:
                self.cache.vectors.clear()  # in memory only (a server): start over rather than grow without bound
            self.cache.vectors.update(zip([k for k, _ in todo], self.encode([t for _, t in todo])))
            self.cache.save()
        return np.stack([self.cache.vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Unit embeddings, in chunks of a few batches under one bar that says what it embeds (minutes on a CPU for
        a large dev set; sentence-transformers' own bar would only say "Batches")."""
        from tqdm.auto import tqdm

        chunk = self.batch_size * 8
        out: list[np.ndarray] = []
        with tqdm(total=len(texts), desc="bi-encoder: embedding passages", unit="passage",
                  disable=not self.progress) as bar:
            for start in range(0, len(texts), chunk):
                part = self.model.encode(texts[start:start + chunk], batch_size=self.batch_size,
                                         normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
                out.extend(part.astype(np.float32))
                bar.update(len(part))
        return out

    def score_run(self, run: Run, queries: Queries, corpus: Corpus, depth: int, use_title: bool = True) -> Run:
        """Cosine of query and passage embeddings for each query's top-`depth`."""
        top = {q: ranked(docs)[:depth] for q, docs in run.items()}
        docs = sorted({d for ds in top.values() for d in ds})
        qids = sorted(top)
        emb_d = self.embed_passages([doc_text(corpus[d], use_title) for d in docs])
        emb_q = self.model.encode([queries[q] for q in qids], batch_size=self.batch_size, normalize_embeddings=True)
        row = {d: i for i, d in enumerate(docs)}
        return {q: {d: float(emb_q[i] @ emb_d[row[d]]) for d in top[q]} for i, q in enumerate(qids)}
