"""Peers run beside mediacore in the same benchmark run, when installed."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

RTMP_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
    "/usr/lib64/nginx/modules/ngx_rtmp_module.so",
)


def nginx_rtmp_module() -> str | None:
    if shutil.which("nginx") is None:
        return None
    for path in RTMP_MODULE_PATHS:
        if Path(path).exists():
            return path
    return None


def nginx_rtmp_config(workdir: Path, port: int, module: str) -> Path:
    """nginx-rtmp doing the same job as mediacore: RTMP in, HLS (MPEG-TS, 2 s) out."""
    (workdir / "hls").mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            hls on;
            hls_path {workdir}/hls;
            hls_fragment 2s;
            hls_playlist_length 16s;
        }}
    }}
}}
""")
    return conf


def start_nginx(workdir: Path, port: int) -> subprocess.Popen[bytes] | None:
    module = nginx_rtmp_module()
    if module is None:
        return None
    conf = nginx_rtmp_config(workdir, port, module)
    return subprocess.Popen(
        ["nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def nginx_proxy_cache_config(
    workdir: Path, port: int, origin: str, workers: int = 1, cpu_affinity: bool = False
) -> Path:
    """nginx as a standard HTTP cache in front of the origin (docs/operator-guide.md has the
    same configuration for production). The cache key holds the path and the normalised
    HLS directives, so blocking requests for the same part share one entry, and
    proxy_cache_lock collapses concurrent misses into one upstream request; the chat
    WebSocket (`/live/STREAM/chat`) is passed through uncached, with its Upgrade. With several
    `workers`, a master process and one SO_REUSEPORT listener per worker, as `mediacore edge
    --workers` runs; `cpu_affinity`: `worker_cpu_affinity auto`, as `edge --cpu-affinity`."""
    (workdir / "cache").mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx-proxy.conf"
    conf.write_text(f"""
daemon off;
master_process {"on" if workers > 1 else "off"};
worker_processes {workers};
{"worker_cpu_affinity auto;" if cpu_affinity and workers > 1 else ""}
{_same_user(workers)}
pid {workdir}/nginx-proxy.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_temp;
    proxy_temp_path {workdir}/proxy_temp;
    fastcgi_temp_path {workdir}/fastcgi_temp;
    uwsgi_temp_path {workdir}/uwsgi_temp;
    scgi_temp_path {workdir}/scgi_temp;
    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=hls:16m max_size=512m inactive=2m use_temp_path=off;
    upstream origin {{
        server {origin};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port}{" reuseport" if workers > 1 else ""};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hls;
            proxy_cache_key "$uri|$arg__HLS_msn|$arg__HLS_part|$arg__HLS_skip";
            proxy_cache_lock on;
            proxy_cache_lock_timeout 15s;
            proxy_cache_lock_age 15s;
            proxy_cache_valid 404 1s;
            proxy_cache_use_stale error timeout updating http_502 http_503 http_504;
            proxy_read_timeout 15s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
        location ~ ^/live/[^/]+/chat$ {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }}
    }}
}}
""")
    return conf


def _same_user(workers: int) -> str:
    """A master started as root runs its workers as `nobody`, who could not write the cache
    directory made here: keep them as the user running the benchmark."""
    if workers > 1 and os.geteuid() == 0:
        return f"user {pwd.getpwuid(0).pw_name};"
    return ""


def start_nginx_proxy(
    workdir: Path, port: int, origin: str, workers: int = 1, cpu_affinity: bool = False
) -> subprocess.Popen[bytes] | None:
    if shutil.which("nginx") is None:
        return None
    conf = nginx_proxy_cache_config(workdir, port, origin, workers, cpu_affinity)
    return subprocess.Popen(
        ["nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
