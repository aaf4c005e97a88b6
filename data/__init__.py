"""Corpora, BM25, hard-negative mining and batching. Imports nothing else of crosstune's."""
