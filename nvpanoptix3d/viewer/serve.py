"""`nvpanoptix3d view RESULTS_DIR`: the scene page served over HTTP, following a running inference job.

The page at / is the same scene page with no data inline: it polls `predictions/scene/live.json`, which a posed
folder's inference rewrites as frames are fused, and redraws on each new version, keeping the view. Everything
else under the results dir is served as files (the written scene pages, previews, meshes, the report).
The standard library's threaded HTTP server is enough for one user's browser: no dependency besides the page.
"""
from __future__ import annotations

import argparse
import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .page import page_html

LIVE = "predictions/scene/live.json"


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, page: bytes, **kwargs):
        self._page = page
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 - the http.server name
        if self.path in ("/", "/index.html"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self._page)))
            self.end_headers()
            self.wfile.write(self._page)
            return
        super().do_GET()

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")      # live.json changes under the same name
        super().end_headers()

    def log_message(self, *args):
        pass


def server(results_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    results = Path(results_dir).resolve()
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such results dir; pass a job's results dir "
                                "(jobs/<job id>/results)")
    page = page_html(f"live: {results.parent.name}", {"live": LIVE}).encode()
    handler = functools.partial(_Handler, page=page, directory=str(results))
    return ThreadingHTTPServer((host, port), handler)


def serve_in_thread(results_dir, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    httpd = server(results_dir, host, port)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nvpanoptix3d view", description=__doc__.splitlines()[0])
    p.add_argument("results_dir", help="a job's results dir (jobs/<job id>/results)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to be reached from other machines")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    try:
        httpd = server(a.results_dir, a.host, a.port)
    except OSError as exc:
        print(f"error: nvpanoptix3d view: {exc.strerror or exc}"
              + (f" (port {a.port}: pass --port)" if getattr(exc, "errno", None) == 98 else ""), file=sys.stderr)
        return 2
    print(f"serving {a.results_dir} at http://{a.host}:{httpd.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
