"""RTMP publish ingest: handshake, chunk stream, AMF0 commands, FLV tags -> Frames."""
