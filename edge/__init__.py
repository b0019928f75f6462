"""Edge nodes: pull-through cache tiers and request collapsing in front of the origin
(`mediacore edge`). The package is reserved by the folder plan; the edge lands with its own issue."""
