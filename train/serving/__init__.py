"""The HTTP face over the ranking pipeline: Starlette app, request bodies, micro-batcher; imports ranking/, artifact/,
config and crosstune.data, never training/."""
