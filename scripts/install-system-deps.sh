#!/usr/bin/env bash
# Installs the Debian packages that the end-to-end tests and benchmarks drive for real:
# ffmpeg/ffprobe (encoder and checker), chromium (hls.js playback), GStreamer (rtmp2sink,
# rtspclientsink, rtpbin + rtprtxsend),
# nginx with the RTMP module (benchmark peer), wrk (HTTP load generator for the edge benchmark),
# redis-server (the multi-node commerce, chat, audience and cluster state; tests start their own instance),
# openssl (self-signed certificates for the RTMPS/RTSPS tests). Skips apt entirely when all are present.
set -euo pipefail
packages=(ffmpeg chromium gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
          gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
          nginx libnginx-mod-rtmp wrk redis-server openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
