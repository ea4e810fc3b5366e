"""`qa` command line: a thin shell that parses, calls the library and formats.

Errors of the library are shown as one clear line (exit code 1); set QA_DEBUG=1 to see the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qa.config import Settings
from qa.errors import QAError, unexpected_reason
from qa.runtime import configure_logging

__all__ = ["main"]


def _print_report(report) -> None:
    if report.up_to_date:
        print(f"Index is up to date ({report.articles} articles): nothing changed since it was built.")
        print(f"Index: {report.index_dir} (version {report.version})")
        _print_skipped(report)
        return
    langs = ", ".join(f"{lang} {n}" for lang, n in report.languages.items())
    print(
        f"Indexed {report.articles} articles ({langs}) into {report.passages} passages "
        f"and {report.sentences} sentences in {report.seconds:.1f} s: {report.embedded} passages and "
        f"{report.sentences_embedded} sentences embedded, {report.reused} passages reused, "
        f"{report.removed_articles} article(s) removed"
        + (f", {report.updated_articles} updated (new date, URL or file)." if report.updated_articles else ".")
    )
    print(f"Index: {report.index_dir} (version {report.version})")
    if report.segments:
        merged = f", after merging {report.merged} of them in {report.merge_seconds:.1f} s" if report.merged else ""
        print(f"  written as a new segment: {report.segments} segment(s) now{merged} (`qa index --merge` makes one)")
    if report.files_read is not None:
        print(f"  {report.files_read} corpus file(s) read: the others are unchanged since the last build")
    if report.kinds:
        print("  inputs: " + ", ".join(f"{kind} {n}" for kind, n in report.kinds.items()))
    if report.encodings:
        print("  encodings: " + ", ".join(f"{name} {n}" for name, n in report.encodings.items()))
    for line in report.search:  # large languages: their approximate index and its measured recall
        print(f"  {line}")
    _print_skipped(report)


def _print_skipped(report) -> None:
    if report.skipped:
        print(f"Skipped {len(report.skipped)} file(s):")
        for item in report.skipped:
            print(f"  {item.source}: {item.reason}")


def cmd_index(args: argparse.Namespace, settings: Settings) -> None:
    # With QA_DEBUG=1 the log shows the traceback of each article left out of the build (the
    # summary gives one line each): see `main`, which configures logging.
    try:
        _build(args, settings)
    except (QAError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # A failure that no single article explains (each article's own are in the summary).
        raise QAError(
            f"Building the index failed unexpectedly ({unexpected_reason(exc)}); the previous index is "
            "unchanged. Run `qa index` again with QA_DEBUG=1 to see where, and report it."
        ) from exc


def _merge_all(settings: Settings) -> None:
    from qa.index.segments.merge import merge_index

    report = merge_index(settings, everything=True)
    if report is None:
        print("Nothing to merge: the index is one version.")
    else:
        print(f"Merged {report.merged_segments} segments into one in {report.seconds:.1f} s: {report.passages_written} "
              f"passages written again, {report.tombstones_dropped} deleted ones dropped (version {report.version}).")


def _build(args: argparse.Namespace, settings: Settings) -> None:
    from qa.index.build import build_index

    url = getattr(args, "database", None) or settings.database_url
    if url:
        from qa.postgres.schema import check_url, connect

        check_url(url)
        connect(url, vectors=False).close()  # unreachable: one line now, not after the embedding
    if args.ray is None:
        # (the database copy is written from one whole version: no segments with --database)
        segments = "rebuild" if url else getattr(args, "segments", "auto")
        _print_report(build_index(args.corpus_dir, settings=settings, progress=not args.quiet, segments=segments))
        if getattr(args, "merge", False):
            _merge_all(settings)
        _write_store(url, settings)
        return
    from qa.distributed import build_index_on_ray

    if args.corpus_dir is None and Path(args.ray).is_dir():  # `qa index --ray corpus/` took it as the address
        raise QAError(f"{args.ray!r} is a folder, not a Ray address: write `qa index {args.ray} --ray`.")
    report = build_index_on_ray(
        args.corpus_dir,
        settings=settings,
        address=args.ray,
        workers=args.ray_workers,
        cpus_per_worker=args.ray_cpus_per_worker,
        progress=not args.quiet,
        database_url=url,  # the Ray workers send the rows
    )
    _print_report(report)
    _write_store(url, settings, report.store)


def _write_store(url: str | None, settings: Settings, written: dict | None = None) -> None:
    """With a database: copy the index just built into it as its new live version (unless
    `written`: the report of that copy, already made by the Ray workers)."""
    if not url:
        return
    from qa.index.load import open_index
    from qa.postgres import write_store
    from qa.postgres.schema import shown_url

    report = written or write_store(url, open_index(settings.index_dir), settings)
    if report["up_to_date"]:
        print(f"Database: {shown_url(url)} is up to date (version {report['version']}).")
        return
    searches = ", ".join(
        f"{lang} {spec['search']}" + "".join(f" {key} {spec[key]}" for key in ("probes", "ef_search") if key in spec)
        + (f" (recall@10 {spec['recall_at_10']:.3f})" if "recall_at_10" in spec else "")
        for lang, spec in report["languages"].items()
    )
    print(
        f"Database: {shown_url(url)} version {report['version']} is live ({report['passages']} passages, "
        f"{report['sentences']} sentences; {searches}) in {report['seconds']:.1f} s."
    )
    if report.get("writers"):
        nodes = sorted({node for node, _ in report["writers"]})
        print(f"  Rows sent by {len(report['writers'])} Ray task(s) on {', '.join(nodes)}.")
    if report["copied"]["passages"]:
        print(f"  {report['sent']['passages']} passages of new or changed articles sent, "
              f"{report['copied']['passages']} of unchanged ones copied from the previous version.")


def _prepare_model(settings: Settings) -> None:
    """Start loading the question model on a thread while the rest imports and the index opens
    (the model compiles without holding the GIL: about half a second less to an answer)."""
    if settings.index_dir.is_dir():  # else the command is about to say there is no index
        from qa.embed import get_embedder

        get_embedder(settings).prepare()


def cmd_search(args: argparse.Namespace, settings: Settings) -> None:
    _prepare_model(settings)
    from qa.retrieval import retrieve

    for rank, passage in enumerate(retrieve(args.question, k=args.k, settings=settings), 1):
        print(f"[{rank}] {passage.score:.3f}  {passage.lang}  {passage.title}  ({passage.source})")
        print(f"    {' '.join(passage.text.split())[:300]}")
        for other in passage.translations:
            print(f"    ↳ also in {other.lang}: {other.source} [{other.start}:{other.end}]")


def cmd_ask(args: argparse.Namespace, settings: Settings) -> None:
    _prepare_model(settings)
    from qa.answer import ask

    answer = ask(args.question, settings=settings)
    print(answer.reply)
    if answer.citations:
        print()
    for citation in answer.citations:
        p = citation.passage
        print(f"[{citation.n}] {p.title} ({p.lang}, {p.source}, chars {citation.evidence_start}-{citation.evidence_end})")
        if answer.mode == "generated":  # the generated reply paraphrases: show what it rests on
            print(f"    {' '.join(citation.evidence.split())}")


def cmd_eval(args: argparse.Namespace, settings: Settings) -> None:
    import json

    from qa.evaluate import format_run, run
    from qa.xquad import find_xquad, load_squad

    if args.hits is not None:
        return _eval_hits(args.hits, settings, getattr(args, "explain", False))
    folder = args.data or find_xquad()
    if folder is None:
        raise SystemExit("No XQuAD data found: pass --data FOLDER (a folder of SQuAD-format <name>.<lang>.json files).")
    langs = [x.strip() for x in args.langs.split(",") if x.strip()] or None
    try:
        data = load_squad(folder, langs, max_articles=args.subset)
    except (OSError, ValueError) as exc:
        raise QAError(str(exc)) from None
    name = "XQuAD" if args.data is None else Path(folder).name
    print(
        f"{name}: {len(data.langs)} languages, {data.n_paragraphs} paragraphs and {data.n_questions} questions "
        f"({'parallel' if data.parallel else 'not parallel'}; "
        f"{'subset of ' + str(args.subset) + ' articles' if args.subset else 'full'}).",
        file=sys.stderr,
    )
    done = run(
        data,
        settings,
        answers=getattr(args, "answers", False),
        tune_quotes=getattr(args, "tune_quotes", False),
        questions=getattr(args, "questions", None),
        off_topic=getattr(args, "off_topic", None),
        data_name=name,
    )
    print(format_run(done))
    print(f"\n(embedding backend {done.backend}; {done.seconds:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(done.results, indent=2), encoding="utf-8")


def _eval_hits(files: list[Path], settings: Settings, explain: bool = False) -> None:
    """`qa eval --hits`: the corpus questions of `files` (default: the seed and the held-out demo
    questions) asked of the index, hit@1 / hit@5 per question language; XQuAD is not loaded.
    `explain`: also the signals of each question the top 5 misses."""
    from qa.evaluate import evaluate_corpus_questions, explain_corpus_misses, format_corpus_hits

    files = files or [Path("tests/data/seed_questions.json"), Path("tests/data/heldout_questions.json")]
    for path in files:
        if not path.is_file():
            raise QAError(f"No question file {path}: pass JSON files of questions with evidence strings to --hits.")
    _prepare_model(settings)
    for path in files:
        print(format_corpus_hits(path, evaluate_corpus_questions(path, settings)))
        if explain:
            print(explain_corpus_misses(path, settings))


def _load_engine_early(settings: Settings) -> None:
    """Load the index and the question model on a thread while the web framework imports (it
    alone takes ~3 s of CPU): the server's own loader then finds them loaded. Errors are left to
    that loader, which reports them (and builds a missing index)."""
    import logging
    import threading

    from qa.index.format import current_version
    from qa.retrieval import get_engine

    if current_version(settings.index_dir) is None:
        return
    engine = get_engine(settings)

    def load() -> None:
        try:
            engine.warm_up()
        except Exception as exc:  # noqa: BLE001 -- reported by the server's loader (qa.serve.service)
            logging.getLogger("qa.cli").debug("early load failed: %s", exc)

    threading.Thread(target=load, name="qa-early-load", daemon=True).start()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    _load_engine_early(settings)
    from qa.serve.app import serve

    serve(settings, host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qa", description="Multilingual question answering over a news corpus.")
    parser.add_argument("--index-dir", type=Path, help="index folder (default: QA_INDEX_DIR or ./index)")
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="show debug messages, and the progress bars and warnings of the libraries underneath",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build or update the index from a folder of articles")
    p.add_argument("corpus_dir", nargs="?", type=Path, help="folder of articles (default: QA_CORPUS_DIR or ./corpus)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="embed on Ray workers (needs qa[distributed]): a new local Ray without ADDRESS, "
        "else auto, HOST:6379 or ray://HOST:10001",
    )
    p.add_argument("--ray-workers", type=int, metavar="N", help="Ray workers (default: cluster CPUs / C)")
    p.add_argument("--ray-cpus-per-worker", type=int, default=1, metavar="C", help="CPUs per Ray worker (1)")
    p.add_argument(
        "--database", metavar="URL",
        help="also write the index into PostgreSQL with pgvector (postgresql://...; default: QA_DATABASE_URL), "
        "where `qa serve`, `qa ask` and `qa search` with QA_DATABASE_URL answer from it",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--segment", dest="segments", action="store_const", const="segment", default="auto",
        help="write the change as a new segment of the live index (by default only when under 10%% of it)",
    )
    how.add_argument(
        "--rebuild", dest="segments", action="store_const", const="rebuild",
        help="write a whole new version, merging the segments",
    )
    how.add_argument(
        "--merge", action="store_true",
        help="then merge every segment into one version, from the index alone (nothing embedded; drops deleted passages)",
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="print the passages that best match a question")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=5, help="how many passages (default 5)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", help="answer a question in its language, quoting and citing the evidence")
    p.add_argument("question")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser(
        "eval", help="measure retrieval on XQuAD or any SQuAD-format set: bare model vs the full pipeline, held out"
    )
    p.add_argument(
        "--data", type=Path, default=None,
        help="folder of SQuAD-format files, one per language: <name>.<lang>.json (default: XQuAD, found by itself)",
    )
    p.add_argument("--subset", type=int, default=0, help="use only the first N articles of each language (0 = all)")
    p.add_argument("--langs", default="", help="comma-separated languages (default: all in the folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument(
        "--answers", action="store_true",
        help="also measure the replies: does the first (any) quote hold the answer, quotes chosen now vs before",
    )
    p.add_argument("--tune-quotes", action="store_true", help="with --answers: choose the quote weights on the tune half")
    p.add_argument(
        "--questions", type=Path, default=None, metavar="FILE",
        help="with --answers: also ask the questions of FILE (JSON, with evidence strings) of the index",
    )
    p.add_argument(
        "--off-topic", type=Path, default=None, metavar="FILE",
        help="with --questions: also ask FILE's questions that the index cannot answer (JSON {lang: [questions]})",
    )
    p.add_argument(
        "--hits", type=Path, nargs="*", default=None, metavar="FILE",
        help="only ask the questions of FILE(s) (JSON, with evidence strings) of the index: hit@1 / hit@5 per "
        "language, bare model vs pipeline (default: tests/data/seed_questions.json and heldout_questions.json)",
    )
    p.add_argument(
        "--explain", action="store_true",
        help="with --hits: for each question whose evidence misses the top 5, its rank and the ranking's signals",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="start the chat UI, the REST API and the embed assets on one port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `qa` console script."""
    args = build_parser().parse_args(argv)
    try:
        overrides: dict[str, object] = {"index_dir": args.index_dir} if args.index_dir else {}
        if args.verbose:
            overrides["log_level"] = "DEBUG"
        settings = Settings(**overrides)
        configure_logging(settings)  # the one place a `qa` command configures logging
        args.func(args, settings)
    except QAError as exc:
        if os.environ.get("QA_DEBUG"):
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; the previous index (if any) is unchanged.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
