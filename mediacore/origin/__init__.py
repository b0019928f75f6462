"""The origin: aiohttp app serving playlists, media, the API, metrics and the watch page."""
