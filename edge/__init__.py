"""Edge nodes: pull-through cache tiers and request collapsing in front of the origin (`mediacore edge`).

`config` holds the settings, `cache` and `collapse` the data structures, `policy` the pure
freshness and stale-if-error decisions, and `server` the aiohttp shell that wires them up."""
