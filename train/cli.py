"""`crosstune <command> --config configs/x.yaml key=value ...`: the top of the import graph."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from crosstune.data.types import DataError
from crosstune.train.recipes.demo import run_demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crosstune", description="Fine-tune cross-encoder rerankers on BM25 hard negatives.")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help: str, config_required: bool = True):
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("--config", required=False, default=None,
                       help="experiment YAML (configs/*.yaml)" + ("" if config_required else "; default configs/demo.yaml"))
        c.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-5 train.max_steps=200")
        return c

    c = command("mine", "BM25 candidates -> hard-negative dataset in checkpoints/<run>/mined/")
    c.add_argument("--overwrite", action="store_true", help="replace an existing mined dataset")
    c.add_argument("--pseudo-queries", default=None, metavar="KINDS",
                   help="queries from the corpus alone instead of the train split: all, or a comma list of headings, "
                        "inverse-cloze, title-phrase (mining.pseudo_queries)")
    c.add_argument("--pseudo-file", default=None, metavar="PATH",
                   help="(query, passage id) pairs from your own query generator, JSON lines or TSV (mining.pseudo_file)")
    c.add_argument("--teacher", default=None, metavar="MODEL",
                   help="add this cross-encoder's (or bi-encoder's) scores to every mined row (mining.teacher)")
    c = command("train", "fine-tune the cross-encoder (also: accelerate launch -m crosstune.train --config ...)")
    c.add_argument("--resume", default=None, help="'latest' or a step_* checkpoint folder")
    c.add_argument("--overwrite", action="store_true",
                   help="start over; the old run waits in <run>/.replaced/ until the new one's first checkpoint")
    c.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    c = command("export", "write the model + card + manifest to checkpoints/<run>/export/ (hf) or export-<format>/")
    c.add_argument("--checkpoint", default=None, help="a step_* folder or best/ (default: best/, else the latest)")
    c.add_argument("--format", default="hf", dest="fmt",
                   help="hf (Hugging Face folder, default), onnx (optimised graph) or onnx-int8 (dynamic int8 for "
                        'CPUs); the ONNX ones need pip install "crosstune[onnx]"')
    c.add_argument("--overwrite", action="store_true")
    command("choose", "choose the ranking best/ ships under eval.latency_budget_ms on this machine: rerank depth, "
                      "cascade stages (eval.stage_models) and fusion weights, on data.dev_split")
    c = command("evaluate", "BM25 top-k -> rerank -> metrics side by side, report.json/.md and TREC runs")
    c.add_argument("--model", default=None, help="export, checkpoint or HF cross-encoder (default: this run's export)")
    c.add_argument("--split", default=None, help="which qrels split (default: data.test_split)")
    c.add_argument("--output", default=None, help="report folder (default: checkpoints/<run>/eval_<split>/)")
    c.add_argument("--overwrite", action="store_true")
    c = command("rerank", "rerank BM25 top-k for one query or a file of queries and print the top passages")
    c.add_argument("query", nargs="?", default=None, help="the query text (or use --queries)")
    c.add_argument("--queries", default=None, help="file: JSON lines {_id,text}, id<TAB>text, or one query a line")
    c.add_argument("--model", default=None, help="export, checkpoint or HF cross-encoder (default: this run's export)")
    c.add_argument("--top", type=int, default=10, help="passages to print per query")
    c = command("demo", "mine -> train -> export -> evaluate on the bundled legal demo set", config_required=False)
    c.add_argument("--overwrite", action="store_true", help="replace checkpoints/<run>/ from an earlier demo")
    add_adapt(command)
    add_serve_and_plot(sub)
    for c in sub.choices.values():
        c.add_argument("--verbose", action="store_true",
                       help="show libraries' debug log lines (also: CROSSTUNE_LOG=debug)")
    return p


def add_adapt(command) -> None:
    c = command("adapt", "a folder of documents (PDF, DOCX, HTML, .txt, .md) -> an adapted, exported reranker, inside "
                "a time budget: pseudo-queries, then your judged queries if given (every step an existing command on "
                "<run>/adapt.yaml; run again to resume)", config_required=False)
    c.add_argument("path", metavar="PATH", help="folder of documents, read recursively")
    c.add_argument("--queries", default=None, help="judged queries: JSON lines {_id, text} or id<TAB>text")
    c.add_argument("--qrels", default=None, help="their judgments: query-id<TAB>doc-id<TAB>score, doc ids being the "
                   "files' paths below PATH without the suffix (contracts/acme for contracts/acme.pdf)")
    c.add_argument("--test-qrels", default=None, help="judgments of other queries, reported and never trained or "
                   "chosen on")
    c.add_argument("--budget", default="30m", help="wall time for everything: 10m, 30m, 1h30m (default 30m)")
    c.add_argument("--name", default="adapt", help="the run: checkpoints/<name>/ (default adapt)")
    c.add_argument("--root", default="checkpoints", help="folder for runs (default checkpoints)")
    c.add_argument("--overwrite", action="store_true", help="start over (the old run is kept until the new one writes)")


def add_serve_and_plot(sub) -> None:
    """The two commands whose free words are not overrides: an export to serve, run folders to plot."""
    c = sub.add_parser("serve", help="serve an export over HTTP: /rerank (TEI and Cohere/Infinity shapes), /search",
                       description="Serve an export over HTTP: POST /rerank (text-embeddings-inference and "
                                   "Cohere/Infinity bodies), POST /search (needs --config with a corpus), GET /health, "
                                   "GET /info. Limits and batching: the config's serve.* keys.")
    c.add_argument("model", metavar="EXPORT", help="an export folder (crosstune export) or best/")
    c.add_argument("--config", default=None,
                   help="experiment YAML: its corpus (data.*) enables /search; eval.* and serve.* apply")
    c.add_argument("--host", default=None, help="address to listen on (default serve.host, 127.0.0.1)")
    c.add_argument("--port", type=int, default=None, help="port (default serve.port, 8000; 0 picks a free one)")
    c.add_argument("overrides", nargs="*", help="dotted overrides, e.g. serve.max_texts=200 eval.batch_size=64")
    c = sub.add_parser("plot", help="training curves (loss, learning rate, dev nDCG@10) of one or more runs",
                       description="loss, learning rate and dev nDCG@10 over steps from each run's metrics.jsonl, the "
                                   "best checkpoint starred; several runs share one figure")
    c.add_argument("runs", nargs="*", metavar="RUN", help="run folders, e.g. checkpoints/demo checkpoints/other")
    c.add_argument("--output", default=None,
                   help="PNG file (default: <run>/training.png for one run, ./training_comparison.png for several)")


def setup_logging(verbose: bool) -> None:
    """Warnings and errors reach the terminal; libraries' debug and info lines only when asked for. The level is set
    on the handler: bm25s sets its own logger to DEBUG when it is imported, after anything we could set on it, and a
    record that passes its logger's level is printed by every handler without a level of its own."""
    levels = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}
    level = logging.DEBUG if verbose else levels.get(os.environ.get("CROSSTUNE_LOG", "").strip().upper(), logging.WARNING)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        handler.setLevel(level)


def split_rerank_args(args) -> None:
    # argparse gives the free words to `query`/`overrides` in order; key=value words are overrides
    words = ([args.query] if args.query else []) + list(args.overrides)
    args.overrides = [w for w in words if "=" in w and " " not in w.split("=", 1)[0]]
    rest = [w for w in words if w not in args.overrides]
    args.query = " ".join(rest) if rest else None


def flag_overrides(args) -> list[str]:
    """`mine --pseudo-queries/--pseudo-file/--teacher` as overrides after the others (so they win and are checked with
    the rest), quoted so a path reads as a string whatever it holds."""
    flags = {"mining.pseudo_queries": getattr(args, "pseudo_queries", None),
             "mining.pseudo_file": getattr(args, "pseudo_file", None), "mining.teacher": getattr(args, "teacher", None)}
    return [f"{key}='{value.replace(chr(39), chr(39) * 2)}'" for key, value in flags.items() if value is not None]


def dispatch(args) -> None:
    from crosstune.train.config import load_config

    if args.command == "demo":
        return run_demo(args)
    if args.command == "adapt":
        from crosstune.train.recipes.adapt import Inputs, adapt_command

        inputs = Inputs(args.path, args.queries or "", args.qrels or "", args.test_qrels or "", args.budget)
        adapt_command(inputs, args.name, args.root, args.overrides, args.overwrite, args.config)
        return
    if args.command == "plot":
        from crosstune.train.evaluation.dashboard import plot_runs

        print(f"plot | {', '.join(args.runs)} -> {plot_runs(args.runs, args.output)}")
        return
    if args.command == "rerank":
        split_rerank_args(args)
    cfg = load_config(args.config, [*args.overrides, *flag_overrides(args)])
    if args.command == "mine":
        from crosstune.train.recipes.mine import mine_command

        mine_command(cfg, args.overwrite)
    elif args.command == "train":
        from crosstune.train.recipes.train import train

        train(cfg, resume=args.resume, overwrite=args.overwrite, cpu=args.cpu)
    elif args.command == "export":
        from crosstune.train.recipes.export import export_command

        export_command(cfg, args.checkpoint, args.overwrite, args.fmt)
    elif args.command == "choose":
        from crosstune.train.recipes.choose import choose_command

        choose_command(cfg)
    elif args.command == "evaluate":
        from crosstune.train.recipes.evaluate import evaluate_command

        evaluate_command(cfg, args.model, args.split, args.output, args.overwrite)
    elif args.command == "serve":
        from crosstune.train.recipes.serve import serve_command

        # the pipeline takes a config only where one was given (a file, or ranking overrides): without one it has
        # no run folder, so serving an export writes no index or embedding cache under the working directory
        ranking_keys = [o for o in args.overrides if not o.startswith("serve.")]
        serve_command(args.model, cfg, cfg if args.config or ranking_keys else None, search=bool(args.config),
                      host=args.host, port=args.port)
    elif args.command == "rerank":
        from crosstune.train.recipes.rerank import read_query_file, rerank_command

        if not args.query and not args.queries:
            raise DataError("rerank needs a query: crosstune rerank --config X \"your question\" (or --queries FILE)")
        queries = read_query_file(args.queries) if args.queries else {"q": args.query}
        rerank_command(cfg, queries, args.model, args.top)


def main(argv: list[str] | None = None) -> int:
    import transformers

    transformers.logging.set_verbosity_error()  # the "newly initialized classifier" notice is expected here
    # overrides may follow flags (`train --config X --overwrite train.lr=1e-4`): argparse gives a positional
    # list one run of words only, so the words after a flag come back unparsed and join the overrides here
    args, extra = build_parser().parse_known_args(argv)
    flags = [w for w in extra if w.startswith("-")]
    if flags:
        print(f"crosstune {args.command}: error: unknown option {flags[0]}; see crosstune {args.command} --help",
              file=sys.stderr)
        return 2
    if args.command == "plot":  # no config: the free words are run folders
        args.runs, extra = [*args.runs, *extra], []
    else:
        args.overrides = [*args.overrides, *extra]
    setup_logging(args.verbose)
    try:
        dispatch(args)
    except (DataError, FileNotFoundError) as e:
        print(f"crosstune {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
