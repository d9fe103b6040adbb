"""Screenshots of a *real* study: the study page and the trial page of its best searched point,
taken from the database and artifacts a ``make demo`` left (real MiniLM fine-tuning on tweets).

    .venv/bin/python docs/screenshots/real_study.py [--workdir ~/.autopeft/demo] [--study 1]

The demo's folder is copied first (the server it starts never touches the original), served by a
local server on 127.0.0.1, and photographed in headless Chromium at 1280x800 into
``docs/screenshots/demo-study.png`` and ``demo-trial.png``. The other screenshots in this folder
come from the browser tests' seeded studies, which run a synthetic python workload.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("AUTOPEFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(Path("~/.autopeft/demo").expanduser()))
    ap.add_argument("--study", type=int, default=1)
    ap.add_argument("--user", default="demo", help="the study's owner (the demo's is demo)")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from autopeft.local_server import LocalServer

    src = Path(args.workdir)
    if not (src / "autopeft.db").exists():
        raise SystemExit(f"no demo database in {src}: run `make demo` first")
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="autopeft-shots-") as tmp:
        work = Path(tmp) / "demo"
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("adapter-*", "server.log"))
        with LocalServer(work, fresh=False, user=args.user) as server:
            front = server.client().study(args.study).pareto()
            searched = [t for t in front if t.get("kind") != "baseline"]
            best = max(searched or front, key=lambda t: t["values"]["accuracy"])
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                context.add_init_script(
                    f"window.localStorage.setItem('autopeft.token', {server.token!r});"
                )
                page = context.new_page()
                page.set_default_timeout(30_000)
                page.goto(f"{server.url}/#/studies/{args.study}")
                page.wait_for_function(
                    "() => { const d = document.querySelector('.plot'); return d && d.data; }"
                )
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "demo-study.png"))
                page.goto(f"{server.url}/#/trials/{best['id']}")
                page.get_by_role("heading", name=f"Trial #{best['number']}").wait_for()
                page.wait_for_function(
                    "() => document.querySelectorAll('#curves .plot.curve').length > 0"
                )
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "demo-trial.png"))
                browser.close()
    print(f"wrote {out / 'demo-study.png'} and {out / 'demo-trial.png'} (trial #{best['number']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
