"""Measuring rankings: metrics, document levels, fusion-weight tuning, the choice under a latency budget, analysis, report.md, plots. Imports ranking, artifact, config and crosstune.data."""
