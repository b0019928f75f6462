"""What the watch-page browser tests share: the demo publisher (burned-in clock) pushing to an
in-process engine, and a node harness in tests/e2e/ driving headless Chromium: it prints
`{"ready": ...}` once every page plays (the test acts on the stream meanwhile), then its
report as the last line."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from conftest import ROOT, require_tool, stop_process, wait_for_playlist

from mediacore.app.config import DemoConfig
from mediacore.app.demo import demo_command
from mediacore.app.engine import Engine


@dataclass
class BrowserRun:
    process: asyncio.subprocess.Process
    ready: dict[str, Any]
    """The harness's `ready` line."""

    async def report(self, timeout: float) -> tuple[dict[str, Any], str]:
        """The harness's report (its last line) and its stderr, once it has finished."""
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        lines = out.decode().strip().splitlines()
        assert lines, f"browser harness printed nothing: {err.decode()[-2000:]}"
        return json.loads(lines[-1]), err.decode()


@contextlib.asynccontextmanager
async def demo_and_browser(
    engine: Engine,
    stream: str,
    script: str,
    harness: dict[str, Any],
    size: tuple[int, int] = (640, 360),
    ready_timeout: float = 100,
) -> AsyncIterator[BrowserRun]:
    """The demo publisher pushing `stream` (until it has 3 segments), then
    `node tests/e2e/SCRIPT HARNESS_JSON` up to its `ready` line; both stopped on the way out."""
    require_tool("node")
    demo = None
    browser = None
    try:
        demo = await asyncio.create_subprocess_exec(
            *demo_command(
                f"rtmp://127.0.0.1:{engine.rtmp_port}/live/{stream}", DemoConfig(width=size[0], height=size[1])
            ),
            cwd=str(ROOT),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_for_playlist(engine.http_port, stream, segments=3, timeout=40)
        browser = await asyncio.create_subprocess_exec(
            "node",
            str(ROOT / "tests" / "e2e" / script),
            json.dumps(harness),
            cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert browser.stdout is not None
        line = await asyncio.wait_for(browser.stdout.readline(), ready_timeout)
        ready = json.loads(line) if line.strip() else {}
        if "ready" not in ready:  # the harness failed before it was ready: its report says why
            rest, err = await asyncio.wait_for(browser.communicate(), 30)
            raise AssertionError(f"browser harness not ready: {(line + rest).decode()[-3000:]} {err.decode()[-2000:]}")
        yield BrowserRun(browser, ready)
    finally:
        if browser is not None and browser.returncode is None:
            browser.kill()
            await browser.wait()
        if demo is not None:
            await stop_process(demo)
