"""The vocabulary every stage shares: frames and tracks (media), H.264 and AAC
configuration, integer timebase and wrap-around arithmetic, the stream-name rule, and the
choice between a hot loop's compiled and pure twins.

Imports nothing of mediacore, ingest or the rest of the tree.
"""
