"""Embedded accounts: the identity provider for deployments without a shop backend.

`POST /api/users` registers a viewer, `POST /api/login` returns a JWT the engine accepts
(the same tokens a shop backend would issue with `[auth] jwt_secret`), `POST /api/guest`
returns a short-lived viewer token for demos. `passwords` hashes with scrypt, `limits` names
every bound and holds the login rate limiter, `settings` reads `[accounts]`, `store` keeps
the users in one SQLite file, `plugin` maps HTTP to them, `manage` is the operator's command
for hosts, moderators and admins (the public API only ever creates viewers)."""
