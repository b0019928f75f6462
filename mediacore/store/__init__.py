"""Stores: the live window of segments, LL-HLS parts and playlists, in memory, with the
one sliding-window and TARGETDURATION rule and the notifier blocked requests wait on.

May import: mediacore.model, mediacore.playlist.
"""
