"""Query parameters on every URI of a playlist's text: `with_query` adds one, `without_query`
takes it away again. A pure text rewrite, applied after a playlist is rendered (or fetched),
so the rendered text, its cache and the golden playlists stay as they are.

URIs are the lines that are not tags (segments, variants) and the `URI="..."` attributes of
tags (EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT, EXT-X-MEDIA). The
origin and the edge use it to carry a viewer's playback token on every URI it will request,
so the player needs no knowledge of tokens. A URI that already has a query gets `&name=value`;
players append their own parameters (`_HLS_msn` and so on) to such URIs correctly.
"""

from __future__ import annotations

import re
from urllib.parse import quote

URI_ATTRIBUTE = re.compile(r'(?<=[:,])URI="([^"]*)"')


def _add(uri: str, pair: str) -> str:
    base, hash_mark, fragment = uri.partition("#")
    return f"{base}{'&' if '?' in base else '?'}{pair}{hash_mark}{fragment}"


def _remove(uri: str, name: str) -> str:
    base, hash_mark, fragment = uri.partition("#")
    path, question, query = base.partition("?")
    if not question:
        return uri
    kept = [p for p in query.split("&") if p and p.partition("=")[0] != name]
    return path + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


def _rewrite(text: str, change: str, name: str, pair: str) -> str:
    def uri(u: str) -> str:
        return _add(u, pair) if change == "add" else _remove(u, name)

    lines = text.split("\n")
    for i, line in enumerate(lines):
        stripped = line.rstrip("\r")
        if not stripped:
            continue
        if stripped.startswith("#"):
            if 'URI="' in stripped:
                lines[i] = URI_ATTRIBUTE.sub(lambda m: f'URI="{uri(m.group(1))}"', line)
        else:
            lines[i] = uri(stripped) + line[len(stripped) :]
    return "\n".join(lines)


def with_query(text: str, name: str, value: str) -> str:
    """`text` with `name=value` (value percent-encoded) added to every URI."""
    return _rewrite(text, "add", name, f"{quote(name, safe='')}={quote(value, safe='')}")


def without_query(text: str, name: str) -> str:
    """`text` with every `name=` parameter taken off every URI: the inverse of with_query."""
    return _rewrite(text, "remove", quote(name, safe=""), "")
