"""Web archives at scale: pages per second and peak resident memory of reading a large `.warc.gz`.

The archive is generated from real pages: the article-extraction benchmark's 181 saved pages
(found in `data/aeb` or `shared/data/aeb` in the current folder or above), repeated with varied
URLs and crawl dates until it holds `--pages` HTML responses, plus what a crawl also holds: a
request record per page, and every 50th a revisit, a 404 and an image. Each measurement runs in a
fresh process that reads the archive as `qa index` does (`qa.ingest`'s WARC reader: decoding with
the HTTP charset, extraction, boilerplate rules, newest capture per URL) and reports its pages/s
and peak resident memory (the process and its worker processes).

Runs: 1 worker vs all cores on the smaller archive (does parallel extraction pay here?), then all
cores on the full archive. Writes results/bench_warc.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, ROOT, aeb_ground_truth, machine

_MEASURE = """
import json, resource, sys, time
from pathlib import Path
from qa.ingest import DEFAULT_MAX_BYTES, formats
from qa.readers.warc import read_warc
path, workers = Path(sys.argv[1]), int(sys.argv[2])
started = time.perf_counter()
articles, skipped = read_warc(path, path.name, formats._warc_article, max_bytes=DEFAULT_MAX_BYTES,
                              workers=workers)
seconds = time.perf_counter() - started
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"articles": len(articles), "skipped": len(skipped), "seconds": round(seconds, 1),
                  "pages_per_s": round(len(articles) / seconds, 1), "peak_rss_mb": round(own, 1),
                  "worker_peak_rss_mb": round(children, 1)}))
"""


def write_archive(path: Path, n_pages: int) -> dict:
    """A .warc.gz of `n_pages` HTML responses made of the aeb pages, with the records a crawl also has."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    aeb, truth = aeb_ground_truth()
    pages = [(item.get("url") or f"https://example.org/{key}", gzip.decompress((aeb / "html" / f"{key}.html.gz").read_bytes()))
             for key, item in sorted(truth.items())]
    with path.open("wb") as stream:
        writer = WARCWriter(stream, gzip=True)

        def record(url, kind, body=b"", status="200 OK", content_type="text/html; charset=utf-8", day=1):
            http = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
            if kind == "request":
                http = StatusAndHeaders("GET / HTTP/1.1", [("Host", "example.org")], is_http_request=True)
            date = f"2024-{1 + day % 12:02d}-{1 + day % 28:02d}T12:00:00Z"
            writer.write_record(writer.create_warc_record(
                url, kind, payload=BytesIO(body), http_headers=http, warc_headers_dict={"WARC-Date": date}))

        for n in range(n_pages):
            url, html = pages[n % len(pages)]
            varied = f"{url}{'&' if '?' in url else '?'}copy={n // len(pages)}"
            record(varied, "request", day=n)
            record(varied, "response", html, day=n)
            if n % 50 == 0:
                record(varied, "revisit", day=n + 1)
                record(f"{varied}-gone", "response", b"Not found", status="404 Not Found", day=n)
                record(f"{varied}.png", "response", b"\x89PNG\r\n\x1a\n" * 100, content_type="image/png", day=n)
    return {"pages": n_pages, "bytes": path.stat().st_size}


def measure(path: Path, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(workers)], capture_output=True,
                         text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20_000, help="HTML pages in the large archive")
    parser.add_argument("--small", type=int, default=1_000, help="pages in the archive for 1 vs 2 workers (0: none)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                        help="workers for the large archive (default: as qa index, one per core but one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_warc.json")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        plan = [(args.small, (1, max(2, args.workers)))] if args.small else []
        for n_pages, worker_counts in [*plan, (args.pages, (args.workers,))]:
            path = Path(folder) / f"crawl-{n_pages}.warc.gz"
            started = time.perf_counter()
            archive = write_archive(path, n_pages)
            print(f"archive of {n_pages} pages: {archive['bytes'] / 1e6:.0f} MB written in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            for workers in worker_counts:
                result = {**archive, "workers": workers, **measure(path, workers)}
                runs.append(result)
                print(json.dumps(result), flush=True)
            path.unlink()
    lines = ["| pages | archive MB | workers | pages/s | peak RSS MB (main) | peak RSS MB (a worker) |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['pages']} | {r['bytes'] / 1e6:.0f} | {r['workers']} | {r['pages_per_s']} "
                     f"| {r['peak_rss_mb']} | {r['worker_peak_rss_mb']} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "table": table, "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
