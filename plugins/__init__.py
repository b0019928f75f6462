"""Plugins beside the engine: commerce (and later chat). A plugin sees only mediacore's plugin
API; the store layer of `plugins.commerce` imports nothing of mediacore at all."""
