"""RTMP ingest: handshake, chunk stream, AMF0, FLV tags and the publish session
(sans-I/O), RTMP -> frames, and the asyncio server."""
