"""Packagers: frames from a hub subscription -> MPEG-TS segments (HLS) and CMAF parts
(LL-HLS) in the stores. Boundaries are decided by pure segmenters; TS segments are muxed
off the event loop.

May import: mediacore.model, mediacore.hub, mediacore.store, mediacore.playlist.
"""
