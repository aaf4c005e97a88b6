"""Model, losses, the Accelerate loop, export, the rerank pipeline, evaluation and the CLI."""
