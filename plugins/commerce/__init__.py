"""Live commerce: catalogue, flash sales that never oversell, idempotent orders, coupons, and
the outbox that hands each order to the shop backend.

`limits` names every bound, `model` the data and the errors, `rules` the pure decisions both
backends share (prices, sale windows, request fingerprints, response bodies), `store` the one
async interface (`CommerceStore`), `flow` the purchase sequence on top of each backend's
atomic steps, `sqlite_store` the embedded default (one file, WAL, one writer thread),
`redis_store` the multi-node backend (one Lua script per atomic step), and `outbox` the
webhook deliverer. The HTTP routes will sit on top of `CommerceStore` and only map outcomes
to status codes."""
