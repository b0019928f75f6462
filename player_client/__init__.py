"""Player client: asyncio HLS / LL-HLS viewers measuring startup, latency and stalls
(`mediacore-play`), the load generator of the simulator and benchmarks.

May import: mediacore.playlist only.
"""
