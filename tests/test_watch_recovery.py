"""The watch page recovers from a fatal media error, as hls.js advises (recoverMediaError: a
new media source, loading on from the playhead), and decodes frames again; past its budget
(watch.js's MEDIA_RECOVERIES within MEDIA_RECOVERY_WINDOW_MS) it shows the error instead of
recovering forever. hls.js raises such an error (a fatal bufferSeekOverHole) when it cannot
move the playhead past holes, as on RTP video that lost frames in transit
(test_rtp_impairment); here the real ffmpeg pushes a clean stream and the harness raises the
error on the page's hls.js (tests/e2e/recover.mjs)."""

from __future__ import annotations

import pytest
from conftest import ffmpeg_push_cmd, make_clip, run_harness, start_process, stop_process, wait_for_playlist

pytestmark = pytest.mark.slow
START_TIMEOUT = 40


@pytest.mark.parametrize("ll", [0, 1])
async def test_watch_page_recovers_from_fatal_media_errors_within_its_budget(engine, ll):
    pusher = await start_process(
        *ffmpeg_push_cmd(make_clip(), f"rtmp://127.0.0.1:{engine.rtmp_port}/live/show", loop=True)
    )
    try:
        await wait_for_playlist(engine.http_port, "show", segments=2, timeout=40)
        page = f"http://127.0.0.1:{engine.http_port}/watch/show?ll={ll}"
        report = await run_harness("recover.mjs", page, str(START_TIMEOUT), timeout=START_TIMEOUT + 60)
    finally:
        await stop_process(pusher)
    assert report["exception"] is None, report
    before, one, four = report["before"], report["afterOne"], report["afterFour"]
    # One fatal error: recovered, and video decodes again (6 s later, at least 2 s of frames).
    assert before["fatal"] is None and before["recovered"] == []
    assert one["recovered"] == ["bufferSeekOverHole"] and one["fatal"] is None and one["error"] == "", one
    assert one["playing"] and one["frames"] - before["frames"] >= 60 and one["t"] > before["t"], (before, one)
    # Three more within the window: two recovered, the third shown.
    assert four["recovered"] == ["bufferSeekOverHole"] * 3, four
    assert four["fatal"] == "bufferSeekOverHole" and "bufferSeekOverHole" in four["error"], four
