"""`jupyter lab` from the repository root opens the course with a working kernel.

Starts a real JupyterLab server (loopback only, a free port, token auth, no browser, root = the
repository, runtime/config/data dirs and HOME in tmp_path so nothing in ~ is touched), lists the
lessons through its REST API, starts a ``python3`` kernel in ``notebooks/``, runs the first
lesson's ``setup`` and ``parameters`` cells (read through the contents API) over the kernel's
websocket, and shuts everything down, checking no process is left behind. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
START_TIMEOUT = 90  # s for the server to answer (JupyterLab builds its page config on first start)
KERNEL_TIMEOUT = 60  # s for the kernel to start
CELL_TIMEOUT = 120  # s per cell
STOP_TIMEOUT = 30  # s for the server and its kernels to exit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jupyter_lab_command() -> list[str]:
    """The ``jupyter lab`` of this environment (the README's ``.venv/bin/jupyter lab``)."""
    jupyter = Path(sys.executable).parent / "jupyter"
    return [str(jupyter), "lab"] if jupyter.exists() else [sys.executable, "-m", "jupyterlab"]


class Lab:
    """A running JupyterLab server and a tiny client for its REST API."""

    def __init__(self, proc: subprocess.Popen, port: int, token: str, log: Path):
        self.proc, self.port, self.token, self.log = proc, port, token, log
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30):
        """Send an authenticated request; return (status, parsed JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read().decode(errors="replace")
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
def lab(tmp_path):
    """Start ``jupyter lab`` on loopback for the repository; stop it (and its kernels) afterwards."""
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path / "home"
    for d in ("home", "runtime", "config", "data", "ipython"):
        (tmp_path / d).mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "0",
        "CXR_SMOKE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = tmp_path / "jupyter-lab.log"
    cmd = [*jupyter_lab_command(), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
           "--allow-root", "--ServerApp.terminals_enabled=False"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Lab(proc, port, token, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"jupyter lab exited with {proc.returncode}:\n{server.server_log()}"
            try:
                if server.request("GET", "/api/status", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                f"jupyter lab did not answer in {START_TIMEOUT} s:\n{server.server_log()}"
            )
            time.sleep(0.5)
        yield server
    finally:
        if proc.poll() is None:  # the test did not shut it down: do it here, harder each time
            try:
                server.request("POST", "/api/shutdown", timeout=5)
                proc.wait(timeout=STOP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(proc.pid, sig)  # the session this fixture started
                        proc.wait(timeout=10)
                        break
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        continue


def _message(msg_type: str, content: dict, session: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session, "username": "test",
                   "date": datetime.now(UTC).isoformat(), "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": [],
    }


async def execute_cells(lab: Lab, kernel_id: str, codes: list[str]) -> list[dict]:
    """Run ``codes`` one after the other on the kernel's websocket channel.

    Returns, per cell, ``{"status": execute_reply status, "stdout": text, "errors": [ename: evalue]}``.
    """
    session = uuid.uuid4().hex
    url = f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?session_id={session}"
    request = HTTPRequest(url, headers={"Authorization": f"token {lab.token}"}, connect_timeout=10)
    conn = await asyncio.wait_for(websocket_connect(request), timeout=20)
    results = []
    try:
        for code in codes:
            msg = _message("execute_request", {"code": code, "silent": False, "store_history": True,
                                               "user_expressions": {}, "allow_stdin": False,
                                               "stop_on_error": True}, session)
            await conn.write_message(json.dumps(msg))
            result, idle, reply = {"stdout": "", "errors": []}, False, False
            while not (idle and reply):
                raw = await asyncio.wait_for(conn.read_message(), timeout=CELL_TIMEOUT)
                assert raw is not None, "the kernel websocket closed while a cell was running"
                reply_msg = json.loads(raw)
                if reply_msg.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind, content = reply_msg["msg_type"], reply_msg["content"]
                if kind == "stream" and content.get("name") == "stdout":
                    result["stdout"] += content["text"]
                elif kind == "error":
                    result["errors"].append(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                elif kind == "execute_reply":
                    result["status"], reply = content["status"], True
            results.append(result)
    finally:
        conn.close()
    return results


def tagged(cells: list[dict], tag: str) -> str:
    found = [c for c in cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r}, found {len(found)}"
    src = found[0]["source"]
    return "".join(src) if isinstance(src, list) else src


def test_jupyter_lab_opens_the_course_and_runs_a_lessons_first_cells(lab):
    assert LESSONS, "no lessons notebooks/NN_*.ipynb: the course must have lessons"

    status, page = lab.request("GET", "/lab")
    assert status == 200 and "JupyterLab" in page, f"/lab did not serve JupyterLab ({status})"

    status, listing = lab.request("GET", "/api/contents/notebooks")
    assert status == 200, f"listing notebooks/ failed ({status}): {listing}"
    listed = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
    assert [p.name for p in LESSONS] == [n for n in listed if n[:2].isdigit()], f"JupyterLab lists {listed}"

    lesson = LESSONS[0].name
    status, model = lab.request("GET", f"/api/contents/notebooks/{lesson}?content=1&type=notebook")
    assert status == 200, f"opening {lesson} failed ({status}): {model}"
    cells = model["content"]["cells"]
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"

    status, specs = lab.request("GET", "/api/kernelspecs")
    assert status == 200 and "python3" in specs["kernelspecs"], f"no python3 kernel: {specs}"

    status, kernel = lab.request("POST", "/api/kernels", {"name": "python3", "path": "notebooks"},
                                 timeout=KERNEL_TIMEOUT)
    assert status == 201, f"starting a python3 kernel failed ({status}): {kernel}\n{lab.server_log()}"
    server = psutil.Process(lab.proc.pid)
    kernel_procs = server.children(recursive=True)
    assert kernel_procs, "the kernel should run as a child of the server"

    check = "import os, sys\nprint(repr(smoke), os.path.basename(os.getcwd()), sys.prefix == " \
            f"{sys.prefix!r})"
    setup, params = tagged(cells, "setup"), tagged(cells, "parameters")
    results = asyncio.run(asyncio.wait_for(execute_cells(lab, kernel["id"], [setup, params, check]),
                                           timeout=3 * CELL_TIMEOUT))
    for name, result in zip(("setup", "parameters", "check"), results, strict=True):
        assert result["status"] == "ok" and not result["errors"], f"{lesson} {name} cell failed: {result}"
    # smoke came from CXR_SMOKE=1; the kernel runs in notebooks/ with this environment's Python
    assert results[2]["stdout"].split() == ["True", "notebooks", "True"], results[2]

    assert lab.request("DELETE", f"/api/kernels/{kernel['id']}")[0] == 204
    status, running = lab.request("GET", "/api/kernels")
    assert status == 200 and running == [], f"kernels still running after delete: {running}"

    lab.request("POST", "/api/shutdown", timeout=10)
    try:
        code = lab.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"jupyter lab did not exit within {STOP_TIMEOUT} s of /api/shutdown")
    assert code == 0, f"jupyter lab exited with {code}:\n{lab.server_log()}"
    _, alive = psutil.wait_procs(kernel_procs, timeout=10)
    assert not alive, f"processes left behind after shutdown: {[p.pid for p in alive]}"


# --- lesson 08's panel, in a real browser ------------------------------------------------------------------

ARTIFACTS = REPO / "test-artifacts"
"""Where the browser test keeps its screenshot (git-ignored)."""


UNHIDE_FILE_INPUT = """
HTMLInputElement.prototype.click = (function (original) {
    return function () {
        if (this.type !== "file") { return original.call(this); }
        this.id = "cxr-test-upload";
        this.style.display = "block";
        if (!this.isConnected) { document.body.appendChild(this); }
    };
})(HTMLInputElement.prototype.click);
"""


def browser_tools() -> tuple[str, str]:
    """Debian's Chromium and ChromeDriver (``.ci/run`` installs them when missing)."""
    import shutil

    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        message = ("the browser test needs Chromium and ChromeDriver: on Debian or Ubuntu "
                   "`sudo apt-get install chromium chromium-driver` (.ci/run installs them)")
        if os.environ.get("CXR_REQUIRE_BROWSER") == "1":  # CI: never skipped
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_lesson_08_panel_predicts_an_uploaded_image_in_a_real_browser(lab, curated_data_dir, mirror, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = browser_tools()
    name = "08_what_the_model_learned.ipynb"
    cells = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    panel = next(i for i, c in enumerate(cells) if "widgets.FileUpload" in "".join(c["source"]))
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(f"{lab.base}/lab/tree/notebooks/{name}?token={lab.token}")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) >= panel + 1)
        wait.until(lambda d: "Idle" in d.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar").text
                   or d.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"))
        driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[0].click()
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        for _ in range(panel + 1):  # run the cells up to the panel, one Shift+Enter each, as a learner would
            ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
        WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".widget-upload"))
        # The upload button opens the file dialog of an <input type=file> it keeps out of the page. Put that input
        # into the page when the button clicks it (instead of opening a dialog), so the test can choose a file.
        driver.execute_script(UNHIDE_FILE_INPUT)
        driver.find_element(By.CSS_SELECTOR, ".widget-upload").click()
        upload = WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "cxr-test-upload"))
        image = sorted((mirror / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[0]
        upload.send_keys(str(image))
        WebDriverWait(driver, 180).until(lambda d: "p(COVID-19) =" in d.find_element(By.TAG_NAME, "body").text)
        text = driver.find_element(By.TAG_NAME, "body").text
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "lesson08-panel.png"))
    finally:
        driver.quit()
    line = next(ln for ln in text.splitlines() if "p(COVID-19) =" in ln)
    assert line.startswith(image.name) and "called" in line
    probabilities = [float(v) for v in re.findall(r"= ([0-9.]+)", line)]
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 0.01
    assert "Research and teaching use only" in text
    assert (ARTIFACTS / "lesson08-panel.png").stat().st_size > 10_000
