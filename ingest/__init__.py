"""Ingest protocols. Each sub-package has a sans-I/O core and a thin asyncio server."""
