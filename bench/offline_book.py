"""Does the book render its equations offline? A reader's check in a headless browser with no network (issue 13).

    python bench/offline_book.py                        # build the model chapter twice (see below), check, save
    python bench/offline_book.py --html book/_build/html  # check an existing build (e.g. after `make book`) as well

What it does:
1. Builds a one-chapter book (nbs/30_model, notebook execution off: the equations are in the markdown) from
   book/_config.yml as it is, and a *control* build from the same config with sphinx-mathjax-offline removed (MathJax from
   its CDN, as before issue 13). Both take a few seconds.
2. Opens the model chapter of each in Debian's `chromium --headless` with the network unavailable: a network namespace with
   no interfaces (`unshare -n`, when allowed), every host name unresolvable and a proxy that goes nowhere. `--dump-dom`
   gives the page after its scripts ran (MathJax's typeset equations are `<mjx-container>` elements); `--screenshot` a
   picture of the top of the chapter (its first equations).
3. Passes if the offline build has typeset equations and no raw TeX left in the text (`\\[`, `\\(`, `\\begin{`, `$$` outside
   code), and the control has none typeset: the control shows that the browser really had no network.

Results under results/bench/book/: summary.json (counts, pass/fail, versions), model_offline.png, model_cdn_control.png.
Not run by CI (a browser is heavy); CI scans the built HTML for external scripts and styles (tools/check_book.py).
Needs: `apt-get install chromium` (Debian). Exit code 1 if the check fails.
"""
from __future__ import annotations

import argparse
import datetime
import html.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench" / "book"
CHAPTER = "nbs/30_model"
RAW_TEX = re.compile(r"\\\[|\\\(|\\begin\{|\$\$")  # display, inline (MathJax delimiters), environments


def build(config_text: str, dest: Path) -> Path:
    "Build the model chapter alone (no notebook execution) with `config_text` as _config.yml; the HTML folder."
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "_config.yml").write_text(config_text.replace("execute_notebooks: force", 'execute_notebooks: "off"'))
    (dest / "_toc.yml").write_text(f"format: jb-book\nroot: {CHAPTER}\n")
    jb = Path(sys.executable).parent / "jupyter-book"
    r = subprocess.run([str(jb), "build", str(ROOT / "book"), "--toc", str(dest / "_toc.yml"), "--config",
                        str(dest / "_config.yml"), "--path-output", str(dest / "out"), "-W", "-n", "--keep-going"],
                       capture_output=True, text=True)
    if r.returncode: sys.exit(f"jupyter-book build failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dest / "out" / "_build" / "html"


def chromium(*args: str) -> subprocess.CompletedProcess:
    "Run headless chromium with the network unavailable."
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None: sys.exit("chromium not found: apt-get install -y chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           '--host-resolver-rules=MAP * ~NOTFOUND', "--proxy-server=127.0.0.1:9", "--virtual-time-budget=20000", *args]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-n", *cmd]  # no network interface at all, not even loopback
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


class _Text(html.parser.HTMLParser):
    "The visible text of a page, without scripts, styles, code blocks and MathJax's own output."
    SKIP = {"script", "style", "pre", "code", "mjx-container", "mjx-assistive-mml", "textarea"}

    def __init__(self):
        super().__init__(); self.depth, self.parts, self.mjx = 0, [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "mjx-container": self.mjx += 1
        if tag in self.SKIP: self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP: self.depth = max(0, self.depth - 1)

    def handle_data(self, data):
        if not self.depth: self.parts.append(data)


def check_page(page: Path, png: Path | None) -> dict:
    "Open `page` offline: typeset equations, raw TeX left in the text, and a screenshot."
    url = page.resolve().as_uri()
    dom = chromium("--dump-dom", url)
    p = _Text(); p.feed(dom.stdout)
    text = "".join(p.parts)
    raw = RAW_TEX.findall(text)
    res = {"page": str(page), "dom_chars": len(dom.stdout), "mjx_container": p.mjx, "raw_tex_left": len(raw),
           "raw_tex_examples": [text[max(0, m.start() - 40):m.end() + 40] for m in RAW_TEX.finditer(text)][:3],
           "external_refs_in_html": sorted(set(re.findall(r'(?:src|href)="(https?://[^"]+\.(?:js|css|woff2?)[^"]*)"',
                                                          page.read_text())))}
    if png is not None:
        with tempfile.TemporaryDirectory() as d:
            shot = chromium("--window-size=1100,1400", f"--screenshot={d}/shot.png", url)
            if not (Path(d) / "shot.png").exists(): sys.exit(f"no screenshot:\n{shot.stderr[-2000:]}")
            png.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(d) / "shot.png", png)
        res["screenshot"] = str(png.relative_to(ROOT))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", help="also check this built book (its model chapter), e.g. book/_build/html")
    a = ap.parse_args(argv)
    cfg = (ROOT / "book" / "_config.yml").read_text()
    if "sphinx-mathjax-offline" not in cfg: sys.exit("book/_config.yml does not load sphinx-mathjax-offline")
    control_cfg = cfg.replace(", sphinx-mathjax-offline]", "]")
    assert control_cfg != cfg
    summary = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "chromium": subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True,
                                          text=True).stdout.strip(),
               "network": "unshare -n (no interfaces) + unresolvable hosts + dead proxy"
                          if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
                          else "unresolvable hosts + dead proxy"}
    with tempfile.TemporaryDirectory() as d:
        html_off = build(cfg, Path(d) / "offline")
        html_cdn = build(control_cfg, Path(d) / "cdn")
        summary["offline"] = check_page(html_off / f"{CHAPTER}.html", OUT / "model_offline.png")
        summary["cdn_control"] = check_page(html_cdn / f"{CHAPTER}.html", OUT / "model_cdn_control.png")
    if a.html:
        summary["given_build"] = check_page(Path(a.html) / f"{CHAPTER}.html", OUT / "model_given_build.png")
    checks = {"offline build typesets equations": summary["offline"]["mjx_container"] > 0,
              "offline build leaves no raw TeX": summary["offline"]["raw_tex_left"] == 0,
              "offline build names no external script/style": not summary["offline"]["external_refs_in_html"],
              "control (CDN MathJax) typesets nothing offline": summary["cdn_control"]["mjx_container"] == 0,
              "control leaves raw TeX": summary["cdn_control"]["raw_tex_left"] > 0}
    if a.html:
        checks["given build typesets equations"] = summary["given_build"]["mjx_container"] > 0
        checks["given build leaves no raw TeX"] = summary["given_build"]["raw_tex_left"] == 0
    summary["checks"], summary["passed"] = checks, all(checks.values())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for k, v in checks.items(): print(f"{'ok  ' if v else 'FAIL'} {k}")
    print(f"typeset equations (mjx-container): offline {summary['offline']['mjx_container']}, "
          f"CDN control {summary['cdn_control']['mjx_container']}; raw TeX left: offline "
          f"{summary['offline']['raw_tex_left']}, control {summary['cdn_control']['raw_tex_left']}")
    print(f"saved {OUT.relative_to(ROOT)}/summary.json and screenshots")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
