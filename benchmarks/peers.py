"""Peers run beside mediacore in the same benchmark run, when installed."""

from __future__ import annotations

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
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
