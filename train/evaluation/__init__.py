"""Measuring rankings: metrics, document levels, fusion-weight tuning, analysis, report.md, plots. Imports ranking, artifact, config and crosstune.data."""
