"""Player client: an asyncio HLS / LL-HLS client measuring startup, latency and stalls
(`mediacore-play`). The package is reserved by the folder plan; the client lands with its own issue."""
