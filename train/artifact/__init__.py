"""A model on disk: loading and checking model folders, the manifest (sha256, serving settings), hf/onnx export, the card, atomic output folders. Imports config and crosstune.data."""
