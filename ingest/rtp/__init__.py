"""RTP ingest: packets, RTCP, jitter buffering and depacketizing (RTSP publish to follow)."""
