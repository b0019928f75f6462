"""The package as users install it: a wheel built from the tree, installed (not editable)
into a fresh virtual environment, imports every package and entry point, and its
`mediacore serve` takes an RTSP publish from ffmpeg.

The fresh environment borrows the dependencies already installed in the project's venv
through a path entry (so the test needs no network), never the project's own source: it
runs outside the checkout and checks that mediacore is imported from the wheel."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    ffmpeg_push_cmd,
    free_port,
    make_clip,
    require_tool,
    start_process,
    stop_process,
    until,
    wait_for_playlist,
)

pytestmark = pytest.mark.slow

ENTRY_POINTS = ("mediacore", "mediacore-bench", "mediacore-play")


def run(*cmd: str | Path, cwd: Path) -> str:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin directory."""
    work = tmp_path_factory.mktemp("wheel")
    leftover = not (ROOT / "build").exists()  # pip builds in the tree; leave it as it was
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        work / "dist",
        ROOT,
        cwd=work,
    )
    if leftover:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = (work / "dist").glob("mediacore-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=work)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=work)
    return venv / "bin"


def test_wheel_imports_every_package_and_entry_point(installed: Path, tmp_path: Path) -> None:
    packages = sorted(
        {
            ".".join(p.relative_to(ROOT).parent.parts)
            for top in ("mediacore", "ingest", "edge", "player_client", "benchmarks", "cython_ext")
            for p in (ROOT / top).rglob("__init__.py")
        }
    )
    assert "ingest.rtp" in packages and "mediacore.store" in packages
    probe = (
        "import importlib, sys\n"
        f"for name in {packages!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert {str(ROOT)!r} not in (module.__file__ or ''), module.__file__\n"
        "from ingest.rtp.compiled import RTP_COMPILED, JITTER_COMPILED, DEPACKETIZER_COMPILED\n"
        "from mediacore.hub.queues import QUEUE_COMPILED\n"
        "assert all((RTP_COMPILED, JITTER_COMPILED, DEPACKETIZER_COMPILED, QUEUE_COMPILED))\n"
        "import mediacore.origin.pages as pages\n"
        "assert (pages.WEB_DIR / 'watch.html').exists()\n"
        "print('ok', len(sys.argv))\n"
    )
    assert run(installed / "python", "-c", probe, cwd=tmp_path).startswith("ok")
    for command in ENTRY_POINTS:
        assert "usage" in run(installed / command, "--help", cwd=tmp_path).lower()


async def test_installed_server_takes_an_rtsp_publish_from_ffmpeg(installed: Path, tmp_path: Path) -> None:
    require_tool("ffmpeg")
    http_port, rtsp_port = free_port(), free_port()
    config = tmp_path / "mediacore.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nrtmp_port = {free_port()}\nrtsp_port = {rtsp_port}\nhttp_port = {http_port}\n'
        "[admin]\nport = 0\n"
    )
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = await asyncio.create_subprocess_exec(
            str(installed / "mediacore"), "serve", "--config", str(config), cwd=str(tmp_path), stdout=log, stderr=log
        )
    pusher = None
    try:
        await until(lambda: "HTTP on" in log_path.read_text(), 30, "the installed server listening")
        rtsp_tcp = ["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp"]
        url = f"rtsp://127.0.0.1:{rtsp_port}/live/wheel"
        pusher = await start_process(*ffmpeg_push_cmd(make_clip(), url, output=rtsp_tcp))
        playlist = await wait_for_playlist(http_port, "wheel", segments=2, timeout=30)
        assert "#EXT-X-TARGETDURATION" in playlist
        assert "publishing stream wheel" in log_path.read_text()
    finally:
        if pusher is not None:
            await stop_process(pusher)
        await stop_process(server)
