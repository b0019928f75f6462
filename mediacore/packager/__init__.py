"""Packagers: frames from a hub subscription -> MPEG-TS segments (HLS) and CMAF parts
(LL-HLS) in the stores. Boundaries are decided by pure segmenters; TS segments are muxed
on the event loop, the large ones on a thread (hls.py says why).

May import: mediacore.model, mediacore.hub, mediacore.store, mediacore.playlist.
"""
