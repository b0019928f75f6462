"""Edge nodes: pull-through cache tiers and request collapsing in front of the origin (`mediacore edge`).

`config` holds the settings, `cache` and `collapse` the data structures, `policy` the pure
freshness and stale-if-error decisions, `keys` what a request is (canonical cache key, the
query sent upstream, the client), `frontier` which segments and parts are not published yet
(their 404s are not stored), `limits` the admission of blocked playlist requests per client
and in total, and `server` the aiohttp shell that wires them up."""
