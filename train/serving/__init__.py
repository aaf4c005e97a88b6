"""The HTTP face over the ranking pipeline: Starlette app, request bodies, micro-batcher. May import evaluation/,
ranking/, artifact/, config and crosstune.data (the floors below it); never training/."""
