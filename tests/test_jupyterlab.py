"""The browser's side of the course in a real JupyterLab: every cell of the chapters run in Chromium.

JupyterLab starts once, on loopback with a token, serving a *copy* of the notebooks (it
autosaves outputs into whatever it serves, and the repository keeps notebooks clean). For each
chapter Chromium opens the notebook, runs every cell, and the test checks that no cell shows an
error (the notebook's own claims are recorded, not raised: its nbval run judges them), that every browser widget rendered and connected (directly and through
jupyter-server-proxy), and that every claim it checked in the browser held.

Skipped with a message where Chromium is not installed (``python3 course.py test`` installs
Debian's on Debian when run as root).
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import urllib.request

import pytest

from conftest import jupyter_url, scaled

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-renderer-backgrounding",
         "--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows"]
CHAPTERS = ["01_pull_and_push.ipynb", "02_ajax_polling.ipynb", "03_long_polling.ipynb", "04_server_sent_events.ipynb",
            "05_websockets.ipynb"]
CHAPTER_TIMEOUT = 240  # seconds for one chapter, every cell and every browser run
# Every cell rendered into the page (no virtual scrolling), so the test sees every output.
NOTEBOOK_SETTINGS = '{"windowingMode": "none"}'


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab on 127.0.0.1 serving a copy of the notebooks; yields (url, token)."""
    home = tmp_path_factory.mktemp("jupyterlab")
    served = home / "notebooks"
    shutil.copytree(NOTEBOOKS, served, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(NOTEBOOK_SETTINGS)
    token = secrets.token_hex(16)
    # The notebooks' own claims are judged by their nbval runs; here, under the heaviest load of the
    # test command, a claim that misses is shown in its cell, not raised, and the browser's side is checked.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COURSE_CLAIMS": "record",
           "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    log = open(home / "jupyterlab.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={served}", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            url = jupyter_url(process, home / "runtime", token, scaled(60))
        except RuntimeError as error:
            raise RuntimeError(f"JupyterLab did not start ({error}): "
                               + (home / "jupyterlab.log").read_text()[-2000:]) from None
        yield url, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
ERRORS = "[data-mime-type='application/vnd.jupyter.error'], [data-mime-type='application/vnd.jupyter.stderr']"


def run_every_cell(page, url: str, token: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, run all its cells and wait until the kernel is done."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{url}/lab/tree/{notebook}?token={token}&reset")  # reset: only this notebook open
    page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=scaled(60) * 1000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=scaled(60) * 1000)  # the kernel is up
    page.click(NOTEBOOK)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
    page.get_by_text("Run All Cells", exact=True).click()
    # Done when no cell is waiting or running ([*]) and every browser widget has finished, or
    # when a cell failed (JupyterLab then stops running the rest).
    try:
        page.wait_for_function("""([notebook, errors]) => {
            const root = document.querySelector(notebook);
            if ([...root.querySelectorAll(errors)].some((e) => e.innerText.includes("Traceback"))) return true;
            const prompts = [...root.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            const widgets = [...root.querySelectorAll('.lab-browser')];
            return widgets.every((w) => ['done', 'failed'].includes(w.dataset.state))
                && prompts.every((p) => /\\[\\d+\\]/.test(p.textContent));
        }""", arg=[NOTEBOOK, ERRORS], timeout=scaled(CHAPTER_TIMEOUT) * 1000, polling=500)
    except PlaywrightTimeout:
        prompts = page.eval_on_selector_all(f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt", "ns => ns.map(n => n.textContent)")
        widgets = page.eval_on_selector_all(".lab-browser", "ns => ns.map(n => n.innerText.slice(0, 300))")
        raise AssertionError(f"{notebook} did not finish in {CHAPTER_TIMEOUT} s; prompts {prompts}; "
                             f"browser widgets {widgets}") from None


def shut_down_kernels(url: str, token: str) -> None:
    """Stop every kernel, so one chapter's servers and threads do not slow the next."""
    import json

    kernels = json.loads(urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=10).read())
    for kernel in kernels:
        request = urllib.request.Request(f"{url}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).read()


def cell_errors(page) -> list[str]:
    return page.eval_on_selector_all(", ".join(f"{NOTEBOOK} {e}" for e in ERRORS.split(", ")),
                                     "nodes => nodes.map(n => n.innerText.slice(0, 2000))")


def unrendered_widgets(page) -> list[str]:
    """Outputs still showing a widget's plain-text stand-in (the widget did not render)."""
    texts = page.eval_on_selector_all(f"{NOTEBOOK} .jp-OutputArea-output", "nodes => nodes.map(n => n.innerText)")
    return [t for t in texts if "open this notebook in JupyterLab" in t or "Loading widget" in t]


# One module, so ``course.py test`` (pytest-xdist, ``--dist loadscope``) runs the chapters on one
# worker with one JupyterLab and one Chromium, beside the other tests rather than against a second
# browser: two at once loaded two cores enough to make the notebooks' own timing claims fail.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", CHAPTERS)
def test_chapter_in_jupyterlab(jupyterlab, chromium, notebook):
    url, token = jupyterlab
    page = chromium.new_page()
    try:
        run_every_cell(page, url, token, notebook)
        verdicts = page.eval_on_selector_all(
            ".lab-browser-verdict", "nodes => nodes.map(n => [n.dataset.verdict, n.innerText])")
        print(f"\n{notebook}:\n" + "\n".join(text for _, text in verdicts))
        errors = [e for e in cell_errors(page) if "Traceback" in e]
        assert not errors, f"cells of {notebook} show errors:\n" + "\n---\n".join(errors)
        assert not unrendered_widgets(page)
        widgets = page.eval_on_selector_all(".lab-browser", "nodes => nodes.map(n => n.dataset.state)")
        assert widgets and all(state == "done" for state in widgets), widgets
        failed = [text for verdict, text in verdicts if verdict != "pass"]
        assert not failed, "browser claims did not hold:\n" + "\n".join(failed)
        connected = [text for _, text in verdicts if " connected " in text]
        assert any("directly" in t for t in connected) and any("jupyter-server-proxy" in t for t in connected)
    finally:
        page.close()
        shut_down_kernels(url, token)

