#!/usr/bin/env bash
# System packages Marill needs (Debian/Ubuntu): libzmq with CURVE (the encrypted links between
# workers, dealer and client; Debian's libzmq3-dev is built with libsodium) and pkg-config to
# find it, and the font the benchmark charts are drawn with. Installs only what is missing.
set -euo pipefail
need=()
pkg-config --exists libzmq 2>/dev/null || need+=(libzmq3-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "installing ${need[*]}" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
