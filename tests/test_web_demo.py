"""The web demo (``lrm-fast demo``, lrm_fast/web.py) end to end.

* in process: the endpoint's errors are the CLI's one-line messages; an opaque photo gets the note;
* a real server (``lrm-fast demo`` in a subprocess on a free local port, small settings):
  - its API from ``gradio_client`` (endpoint ``/reconstruct``),
  - a real browser: headless Chromium from Debian's packages (``tools/setup_browser.sh``) driven by
    selenium uploads the shipped sample, waits for the preprocessed input, the video (decoded by the
    browser) and the 3D view's canvas, downloads the GLB with the page's GLB button and loads it with
    trimesh, saves a screenshot, then checks that a bad file shows the CLI's error on the page.

Needs the demo extra (gradio; ``pip install -e ".[dev]"`` includes it); the browser test skips with
the reason when Chromium or chromedriver is missing, unless ``LRM_FAST_REQUIRE_BROWSER=1`` (set by
CI's ``.ci/run``) makes that a failure. ``LRM_FAST_WEB_SCREENSHOT=path.png`` also copies the screenshot
there (how docs/readme/web-demo.png is made; see docs/readme/web.md).
"""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
import urllib.request

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "lrm_fast", "assets", "sample.png")
HAVE_GRADIO = importlib.util.find_spec("gradio") is not None
needs_gradio = pytest.mark.skipif(not HAVE_GRADIO, reason='gradio is not installed (pip install --no-build-isolation -e ".[demo]")')
# The page's settings for the tests: small, so a run takes seconds on a 2-core CPU.
MC, VIEWS = 20, 3
SERVER_ARGS = ["--mc-resolution", str(MC), "--views", str(VIEWS), "--resolution", "32"]


def _png(path, rgba: np.ndarray):
    from PIL import Image

    Image.fromarray(rgba).save(path)
    return str(path)


def _cli_error(argv, capsys, monkeypatch) -> str:
    """What ``lrm-fast ...`` prints after ``error: `` (one line)."""
    from lrm_fast.cli import main

    monkeypatch.delenv("LRM_FAST_DEBUG", raising=False)
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0].split(": error: ", 1)[1]


def test_demo_command_defaults_and_missing_gradio(capsys, monkeypatch):
    """Starts on the shipped demo model, binds 127.0.0.1 by default; without gradio: one line saying how
    to install it (and ``lrm-fast --help`` never imports gradio)."""
    from lrm_fast.api import DEFAULT_MODEL
    from lrm_fast.cli import build_parser
    import lrm_fast.commands.demo as demo_cmd

    args = build_parser().parse_args(["demo"])
    assert (args.model, args.host, args.port) == (DEFAULT_MODEL, "127.0.0.1", 7860)
    real = importlib.util.find_spec
    monkeypatch.setattr(demo_cmd.importlib.util, "find_spec", lambda n, *a: None if n == "gradio" else real(n, *a))
    msg = _cli_error(["demo"], capsys, monkeypatch)
    assert "gradio" in msg and '".[demo]"' in msg, msg
    r = subprocess.run([sys.executable, "-c", "import sys, lrm_fast.cli as c; c.build_parser(); "
                        "print('gradio' in sys.modules)"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr


@pytest.fixture(scope="module")
def demo():
    if not HAVE_GRADIO:
        pytest.skip('gradio is not installed (pip install --no-build-isolation -e ".[demo]")')
    from lrm_fast.web import Demo

    return Demo(mc_resolution=16, views=2, resolution=16)


@needs_gradio
@pytest.mark.parametrize("case", ["not_an_image", "too_small", "missing_model"])
def test_endpoint_errors_are_the_cli_one_liners(demo, case, tmp_path, capsys, monkeypatch):
    """Bad input -> gr.Error whose message is the CLI's line (the upload's temp folder cut to the file name)."""
    import gradio as gr

    photo, model = SAMPLE, "assets/demo"
    if case == "not_an_image":
        photo = str(tmp_path / "notes.png")
        open(photo, "w").write("hello")
    elif case == "too_small":
        photo = _png(tmp_path / "tiny.png", np.zeros((16, 20, 3), np.uint8))
    else:
        model = str(tmp_path / "no_such_model")
    with pytest.raises(gr.Error) as e:
        demo.run(photo, model, 16, 2)
    page = e.value.message
    cli = _cli_error(["reconstruct", photo, "--model", model], capsys, monkeypatch)
    assert page == cli.replace(photo, os.path.basename(photo)) and "\n" not in page, (page, cli)
    with pytest.raises(gr.Error, match="no photo"):
        demo.run(None, model, 16, 2)


@needs_gradio
def test_endpoint_outputs_and_opaque_note(demo, tmp_path):
    """An opaque photo is cut out by default (the preprocessed input shows the cut-out) and the page
    says so; with the checkbox off it is used as is; the outputs are the files the API writes."""
    import trimesh
    from PIL import Image
    from lrm_fast.io.background import resolve_method
    from lrm_fast.web import CUT_NOTE, OPAQUE_NOTE

    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 90, np.uint8)   # a gray backdrop
    img[16:48, 20:44] = rng.integers(0, 255, (32, 24, 3), dtype=np.uint8)
    photo = _png(tmp_path / "opaque photo.png", img)
    inp, video, view, glb, obj, mp4, status = demo.run(photo, "", 16, 2)  # "" = the default model
    assert CUT_NOTE.format(method=resolve_method("auto")) in status and "opaque photo.png" in status
    assert view == glb and mp4 == video and os.path.basename(glb) == "opaque_photo.glb"
    assert os.path.getsize(video) > 0 and obj.endswith(".obj") and inp.endswith("_input.png")
    mesh = trimesh.load(glb, force="mesh")
    assert len(mesh.faces) > 0 and f"{len(mesh.faces)} faces" in status
    cut = np.asarray(Image.open(inp).convert("RGB"), np.float32)
    inp_off, *_, status_off = demo.run(photo, "", 16, 2, False)
    assert OPAQUE_NOTE in status_off and CUT_NOTE.split("{")[0] not in status_off
    # the cut-out: the gray backdrop became the model's background; off: the photo as is
    off = np.asarray(Image.open(inp_off).convert("RGB"), np.float32)
    gray = lambda a: (np.abs(a - 90) < 6).all(-1).mean()   # noqa: E731
    assert gray(off) > 0.5 and gray(cut) < 0.1, (gray(off), gray(cut))
    # the shipped sample has an alpha channel: no note
    st = demo.run(SAMPLE, "assets/demo", 16, 2)[-1]
    assert OPAQUE_NOTE not in st and CUT_NOTE.split("{")[0] not in st
    # a flat photo: nothing to cut out, the page says so in one line
    import gradio as gr

    flat = _png(tmp_path / "flat.png", np.full((64, 64, 3), 200, np.uint8))
    with pytest.raises(gr.Error, match="no foreground object found"):
        demo.run(flat, "", 16, 2)


@needs_gradio
def test_model_allowlist_off_loopback(tmp_path, monkeypatch):
    """Served to the network (or with --models), the page opens only its start model and checkpoints
    under --models; any other path is refused in one line, whether it exists or not."""
    import gradio as gr
    from lrm_fast.web import Demo, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.1.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    models = tmp_path / "models"
    models.mkdir()
    d = Demo(mc_resolution=16, views=2, resolution=16, models=[str(models)], restricted=True)
    assert d.allowed_model("assets/demo") == "assets/demo"       # the start model
    outside = [str(tmp_path), "/etc", "tiny", "../models/x", os.path.join(str(models), "..", "elsewhere"),
               str(models)]
    for name in outside:
        with pytest.raises(ValueError, match="not allowed on this server") as e:
            d.allowed_model(name)
        assert "\n" not in str(e.value)
        with pytest.raises(gr.Error, match="not allowed on this server"):
            d.run(SAMPLE, name, 16, 2)
    (models / "ckpt").mkdir()
    assert d.allowed_model("ckpt") == os.path.realpath(str(models / "ckpt"))
    assert d.allowed_model(str(models / "ckpt")) == os.path.realpath(str(models / "ckpt"))
    os.symlink(str(tmp_path), str(models / "escape"))             # a link out of the folder is refused
    with pytest.raises(ValueError, match="not allowed"):
        d.allowed_model("escape")
    # loopback without --models: the page opens any preset or path, as before
    assert Demo(mc_resolution=16, views=2, resolution=16).allowed_model("tiny") == "tiny"
    # the command: not loopback -> restricted
    from lrm_fast.commands import demo as cmd

    seen = {}
    monkeypatch.setattr("lrm_fast.web.launch", lambda demo, host, port: seen.update(demo=demo))
    monkeypatch.setattr(cmd.signal, "signal", lambda *a: None)   # keep pytest's SIGTERM handler
    from lrm_fast.cli import build_parser

    args = build_parser().parse_args(["demo", "--host", "0.0.0.0", "--mc-resolution", "16"])
    assert cmd.run(args) == 0 and seen["demo"].restricted and not seen["demo"].model_dirs
    args = build_parser().parse_args(["demo", "--mc-resolution", "16"])
    assert cmd.run(args) == 0 and not seen["demo"].restricted


# ---------------------------------------------------------------- a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``lrm-fast demo`` in a subprocess on a free port; yields its URL."""
    if not HAVE_GRADIO:
        pytest.skip('gradio is not installed (pip install --no-build-isolation -e ".[demo]")')
    work = tmp_path_factory.mktemp("web")
    port = _free_port()
    # one torch thread: on a loaded 2-core machine (other jobs, the browser's software WebGL) two
    # OpenMP threads that keep losing their core made a run ~2x slower, not faster
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(work / "gradio-cache"),
           "PYTHONUNBUFFERED": "1"}
    log = open(work / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "lrm_fast.cli", "demo", "--port", str(port), *SERVER_ARGS],
                            cwd=str(work), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"lrm-fast demo exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                log.seek(0)
                pytest.fail(f"lrm-fast demo did not answer on {url} within 240 s:\n{log.read()[-3000:]}")
            time.sleep(1)
        log.seek(0)
        assert f"http://127.0.0.1:{port}" in log.read()  # the default host is 127.0.0.1
        yield url, str(work / "server.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@needs_gradio
def test_api_from_gradio_client(server, tmp_path):
    """The page's endpoint works from gradio_client under its stable name; errors come back as messages."""
    import trimesh
    from gradio_client import Client, handle_file

    url, _ = server
    client = Client(url, verbose=False, download_files=str(tmp_path))
    assert "/reconstruct" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    inp, video, view, glb, obj, mp4, status = client.predict(handle_file(SAMPLE), "assets/demo", MC, VIEWS,
                                                             api_name="/reconstruct")
    assert "Reconstructed **sample.png**" in status and f"{MC}^3" in status and f"{VIEWS} frames" in status, status
    assert len(trimesh.load(glb, force="mesh").faces) > 0
    assert os.path.getsize(video) > 0 and os.path.getsize(obj) > 0 and os.path.getsize(inp) > 0
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(bad)), "assets/demo", MC, VIEWS, api_name="/reconstruct")
    assert str(e.value) == "bad.png: not an image file (unrecognized format)", str(e.value)


def _chromium():
    """(chromium binary, chromedriver) or a skip/fail reason."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver, None
    return None, None, ("headless Chromium + chromedriver are not installed: run `sudo bash tools/setup_browser.sh` "
                        "(Debian: apt-get install chromium chromium-driver)")


@needs_gradio
def test_browser_upload_video_3d_view_and_glb_download(server, tmp_path):
    browser, driver_path, why = _chromium()
    if why:
        if os.environ.get("LRM_FAST_REQUIRE_BROWSER") == "1":
            pytest.fail(why + " (LRM_FAST_REQUIRE_BROWSER=1)")
        pytest.skip(why)
    if importlib.util.find_spec("selenium") is None:
        pytest.skip('selenium is not installed (pip install -e ".[dev]")')
    import trimesh
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import (ElementClickInterceptedException, StaleElementReferenceException,
                                            WebDriverException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.perf_counter()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,800",
              "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--mute-audio"):  # WebGL on the CPU
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        url, server_log = server
        drv.get(url)
        # generous: CI machines are small and loaded; the page re-renders while we look (stale elements)
        wait = WebDriverWait(drv, 240, poll_frequency=0.5, ignored_exceptions=(
            StaleElementReferenceException, IndexError, ElementClickInterceptedException))
        click = lambda sel: wait.until(lambda d: css(sel)[0].click() or True)  # noqa: E731 (once nothing covers it)
        css = lambda sel: drv.find_elements(By.CSS_SELECTOR, sel)  # noqa: E731
        wait.until(lambda d: css("#photo input[type=file]"))
        css("#photo input[type=file]")[0].send_keys(SAMPLE)
        uploaded = lambda stem: lambda d: css("#photo button[aria-label=Clear]") and stem in css("#photo")[0].text  # noqa: E731
        wait.until(uploaded("sample"))
        click("#run")
        wait.until(lambda d: "Reconstructed" in css("#status")[0].text)
        status = css("#status")[0].text
        assert "sample.png" in status and f"{MC}^3" in status and f"{VIEWS} frames" in status, status
        # the preprocessed input, the video (the browser decoded it: readyState >= 2) and the 3D view
        wait.until(lambda d: css("#input img") and "_input.png" in css("#input img")[0].get_attribute("src"))
        wait.until(lambda d: d.execute_script(
            "const v = document.querySelector('#video video'); return v && v.src.endsWith('.mp4') && v.readyState >= 2"))
        wait.until(lambda d: css("#mesh3d canvas") and css("#mesh3d canvas")[0].size["width"] > 100)
        time.sleep(1.0)  # let the 3D view draw the mesh before the screenshot
        # the GLB through the page's own download button
        click("#dl-glb")
        wait.until(lambda d: any(f.endswith(".glb") for f in os.listdir(downloads)))
        glb = str(downloads / next(f for f in os.listdir(downloads) if f.endswith(".glb")))
        WebDriverWait(drv, 30).until(lambda d: os.path.getsize(glb) > 0 and not any(
            f.endswith(".crdownload") for f in os.listdir(downloads)))
        mesh = trimesh.load(glb, force="mesh")
        assert os.path.basename(glb) == "sample.glb" and len(mesh.faces) > 0
        assert f"{len(mesh.faces)} faces" in status, status
        shot = str(tmp_path / "web-demo.png")
        assert drv.save_screenshot(shot) and os.path.getsize(shot) > 10_000
        if os.environ.get("LRM_FAST_WEB_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["LRM_FAST_WEB_SCREENSHOT"])
        # a bad file: the CLI's one-line error, on the page
        bad = tmp_path / "notes.png"
        bad.write_text("hello")
        click("#photo button[aria-label=Clear]")
        wait.until(lambda d: css("#photo input[type=file]"))
        css("#photo input[type=file]")[0].send_keys(str(bad))
        wait.until(uploaded("notes"))
        click("#run")
        wait.until(lambda d: any("not an image file" in t.text for t in css("[data-testid=toast-body]")))
        toast = next(t.text for t in css("[data-testid=toast-body]") if "not an image file" in t.text)
        assert "notes.png: not an image file (unrecognized format)" in toast, toast
    except Exception as e:  # say what the page and the server showed
        drv.save_screenshot(str(tmp_path / "failure.png"))
        page = " | ".join(t.text for t in drv.find_elements(By.CSS_SELECTOR, "#status, [data-testid=toast-body]"))
        where = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__][-1]
        what = e.msg if isinstance(e, WebDriverException) else str(e)
        raise AssertionError(f"{type(e).__name__} at line {where.lineno} ({where.line}): {what}; page: {page!r}; screenshot {tmp_path / 'failure.png'}; "
                             f"server log:\n{open(server_log).read()[-3000:]}") from e
    finally:
        drv.quit()
    print(f"browser test: {time.perf_counter() - t0:.1f} s (server already running)")
