"""An Enhanced RTMP publisher: remuxes an MP4 (HEVC or AV1 + AAC) to `rtmp://` in real time
with PyAV's bundled FFmpeg, whose FLV muxer (FFmpeg >= 6.1) writes `hvc1`/`av01` ex-header
video tags (the connect command carries no `fourCcList`: see below). Debian's ffmpeg 5.1
cannot.

    python -m benchmarks.ertmp_publish CLIP rtmp://HOST/live/STREAM [--loops N]

Prints the video packets it sent on its last line.
"""

from __future__ import annotations

import argparse
import time

import av


def publish(source: str, url: str, loops: int = 1, realtime: bool = True) -> int:
    """Send `source` `loops` times back to back on one connection; returns video packets sent."""
    sent = 0
    inp = av.open(source)
    # PyAV opens the output with avio_open() and no protocol options, so FFmpeg's rtmp
    # protocol option `rtmp_enhanced_codecs` cannot be set: connect carries no fourCcList
    # (the spec does not require one before ex-header video tags).
    out = av.open(url, "w", format="flv")
    try:
        streams = {}
        for s in inp.streams:
            if s.type in ("video", "audio"):
                # opaque=True copies the codec parameters (extradata: hvcC/av1C) without needing
                # a decoder by that name in PyAV's build.
                streams[s.index] = out.add_stream_from_template(s, opaque=True)
        start = time.monotonic()
        offset = 0.0
        for _ in range(loops):
            inp.seek(0)
            first: float | None = None
            last = 0.0
            for packet in inp.demux():
                if packet.dts is None or packet.stream.index not in streams:
                    continue
                tb = packet.time_base
                t = float(packet.dts * tb)
                first = t if first is None else min(first, t)
                last = max(last, t + float((packet.duration or 0) * tb))
                at = offset + t
                if realtime:
                    delay = at - (time.monotonic() - start)
                    if delay > 0:
                        time.sleep(delay)
                shift = round(offset / tb)
                packet.dts += shift
                if packet.pts is not None:
                    packet.pts += shift
                video = packet.stream.type == "video"
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
                sent += video
            offset += last - (first or 0.0)  # the next loop starts where every track of this one ended
    finally:
        out.close()
        inp.close()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("url")
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args()
    print(publish(args.source, args.url, args.loops))


if __name__ == "__main__":
    main()
