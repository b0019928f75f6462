"""The origin: aiohttp routes serving playlists, media, the JSON API, metrics and the
watch page from the stores, through an OriginState the app fills.

May import: mediacore.model, mediacore.hub, mediacore.store, mediacore.playlist,
mediacore.access.
"""
