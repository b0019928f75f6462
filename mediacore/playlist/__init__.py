"""Playlists as data: media playlists (HLS and LL-HLS) and multivariant playlists, each
with one render() and one parse(), the attribute and date syntax, and every media URI
format. The stores render with it; the player client and the tests parse with it.

May import: nothing of the tree but this package.
"""
