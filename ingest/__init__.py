"""Ingest protocols, one sub-package each (rtmp, rtp with RTSP and SDP). Each has a
sans-I/O core and a thin asyncio server.

May import: mediacore.model and mediacore.hub.publisher only.
"""
