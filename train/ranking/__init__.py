"""Ranking with a model: scorers (torch, onnx), bi-encoder, candidates, fusion, document aggregation, the one settings resolver and RankingPipeline. Imports artifact, config and crosstune.data."""
