"""Packagers: frames from the hub -> HLS segments and playlists in the store."""
