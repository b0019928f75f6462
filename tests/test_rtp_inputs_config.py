"""[[rtp.inputs]] in the config: the engine listens on the SDP's ports at start; bad entries
are refused with a clear error."""

from __future__ import annotations

import pytest
from conftest import free_port, local_config
from impair import free_udp_pair
from test_rtp_depacketize import FFMPEG_SDP

from mediacore.app.config import ConfigError, load_config
from mediacore.app.engine import Engine


async def test_configured_raw_input_listens_on_the_sdp_ports(tmp_path):
    video, audio = free_udp_pair(), free_udp_pair()
    sdp = tmp_path / "cam.sdp"
    sdp.write_text(FFMPEG_SDP.replace("m=video 0", f"m=video {video}").replace("m=audio 0", f"m=audio {audio}"))
    config = local_config(rtp={"inputs": [{"stream": "cam", "sdp": str(sdp)}]}, admin={"port": 0})
    engine = Engine(config)
    await engine.start()
    try:
        [rtp_input] = engine.rtp_inputs
        assert set(rtp_input.ports.values()) == {(video, video + 1), (audio, audio + 1)}
        assert rtp_input.publisher is None  # publishes when packets arrive
        assert rtp_input.repair_bitrate is None  # video repair is off unless asked for
    finally:
        await engine.stop()


def test_bad_input_entries_are_refused():
    with pytest.raises(ConfigError, match="needs both stream and sdp"):
        load_config(None, {"rtp": {"inputs": [{"stream": "cam"}]}})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(None, {"rtp": {"inputs": [{"stream": "cam", "sdp": "x", "port": 1}]}})
    with pytest.raises(ConfigError, match=r"rtp.inputs\[0\].video_repair must be one of off, reencode"):
        load_config(None, {"rtp": {"inputs": [{"stream": "cam", "sdp": "x", "video_repair": "on"}]}})
    with pytest.raises(ConfigError, match="rtsp.video_repair_bitrate must be positive"):
        load_config(None, {"rtsp": {"video_repair": "reencode", "video_repair_bitrate": 0}})


async def test_video_repair_reaches_the_raw_input(tmp_path):
    video = free_udp_pair()
    sdp = tmp_path / "cam.sdp"
    sdp.write_text(FFMPEG_SDP.replace("m=video 0", f"m=video {video}").split("m=audio")[0])
    inputs = [{"stream": "cam", "sdp": str(sdp), "video_repair": "reencode", "video_repair_bitrate": 1_500_000}]
    engine = Engine(local_config(rtp={"inputs": inputs}, admin={"port": 0}))
    await engine.start()
    try:
        [rtp_input] = engine.rtp_inputs
        assert rtp_input.repair_bitrate == 1_500_000
    finally:
        await engine.stop()


async def test_missing_sdp_file_fails_start(tmp_path):
    config = load_config(
        None,
        {
            "server": {
                "host": "127.0.0.1",
                "rtmp_port": free_port(),
                "rtsp_port": free_port(),
                "http_port": free_port(),
            },
            "rtp": {"inputs": [{"stream": "cam", "sdp": str(tmp_path / "missing.sdp")}]},
            "admin": {"port": 0},
        },
    )
    engine = Engine(config)
    with pytest.raises(ConfigError, match="missing.sdp"):
        await engine.start()
    await engine.stop()
