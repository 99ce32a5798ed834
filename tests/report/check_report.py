#!/usr/bin/env python3
"""Renders an xbar report.html in headless Chromium (Debian's `chromium`) and checks it the way a
reader's browser sees it: it loads with no console messages (errors, CSP refusals, failed loads),
the page makes no network request, every plot is present and draws data, and the screenshot is
not blank. Keeps the screenshot (report.png) and the rendered DOM in ARTIFACT_DIR.

Usage: check_report.py REPORT.html ARTIFACT_DIR FIGURE_ID...   (exit 0 = all checks passed)
"""
import html.parser
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio"]

failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def chromium(args, tmp):
    env = dict(os.environ, HOME=tmp)  # a fresh profile; no user state
    return subprocess.run(["chromium", *FLAGS, f"--user-data-dir={tmp}/profile", *args],
                          capture_output=True, text=True, timeout=120, env=env)


class Figures(html.parser.HTMLParser):
    """Per <figure class="plot">: its id and how many data marks (bars, lines, points) its SVG draws."""

    def __init__(self):
        super().__init__()
        self.figures = {}
        self.current = None
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "plot" in (a.get("class") or ""):
            self.current = a.get("id", "?")
            self.figures[self.current] = {"svg": 0, "marks": 0}
            self.depth = 1
            return
        if self.current is None:
            return
        if tag == "figure":
            self.depth += 1
        if tag == "svg":
            self.figures[self.current]["svg"] += 1
        # Data marks: every point and bar carries a <title> with its value (frames, grids and
        # legends don't).
        if tag == "title":
            self.figures[self.current]["marks"] += 1

    def handle_endtag(self, tag):
        if self.current is not None and tag == "figure":
            self.depth -= 1
            if self.depth == 0:
                self.current = None


def png_pixels(path):
    """(width, height, raw scanline bytes) of an 8-bit PNG, without PIL."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return w, h, zlib.decompress(idat)


def main():
    report, artifacts, expected = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(artifacts, exist_ok=True)
    text = open(report, encoding="utf-8").read()
    url = "file://" + os.path.abspath(report)

    # Static: nothing that could fetch or run (the SVG namespace URI is a name, not a fetch).
    stripped = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    check("<script" not in text.lower(), "no <script> in the report")
    check(re.search(r"(https?|ftp|wss?)://", stripped) is None, "no external URL in the report")
    check(re.search(r"<link\b|@import|url\(", text, re.I) is None, "no <link>, @import or url() in the report")

    with tempfile.TemporaryDirectory() as tmp:
        netlog = os.path.join(tmp, "net.json")
        shot = os.path.join(artifacts, "report.png")
        r = chromium(["--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}", "--window-size=1280,6000",
                      f"--screenshot={shot}", url], tmp)
        check(r.returncode == 0, f"chromium renders the report (exit {r.returncode})")
        console = [l for l in r.stderr.splitlines() if "CONSOLE" in l]
        check(not console, "no console messages" + ("" if not console else ": " + " | ".join(console[:3])))
        # Requests the page made (Chromium's own background requests have no page origin).
        page_requests = []
        try:
            events = json.load(open(netlog)).get("events", [])
        except (OSError, ValueError):
            events = None
        check(events is not None, "Chromium wrote its network log")
        for e in events or []:
            p = e.get("params") or {}
            u = p.get("url", "")
            if re.match(r"(https?|ftp|wss?)://", u) and p.get("initiator", "not an origin") != "not an origin":
                page_requests.append(u)
        check(not page_requests, "the page makes no network request" + ("" if not page_requests else ": " + ", ".join(page_requests[:3])))

        r = chromium(["--dump-dom", url], tmp)
        open(os.path.join(artifacts, "report.dom.html"), "w").write(r.stdout)
        check(r.returncode == 0 and "</html>" in r.stdout, "Chromium returns the rendered DOM")
        parser = Figures()
        parser.feed(r.stdout)
        for fid in expected:
            f = parser.figures.get("fig-" + fid)
            check(f is not None and f["svg"] == 1, f"plot '{fid}' is present")
            check(f is not None and f["marks"] >= 2, f"plot '{fid}' draws data ({f['marks'] if f else 0} marks)")

        ok_png = os.path.exists(shot) and os.path.getsize(shot) > 10000
        check(ok_png, "screenshot written")
        if ok_png:
            w, h, raw = png_pixels(shot)
            check(w == 1280 and h == 6000, f"screenshot is the window ({w}x{h})")
            # Not a blank page: the first 2000 rows hold many distinct byte values (text, plots).
            top = raw[: (len(raw) // h) * 2000]
            check(len(set(top)) > 50, "screenshot shows content")
    print(f"report check: {len(failures)} failure(s); artefacts in {artifacts}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
