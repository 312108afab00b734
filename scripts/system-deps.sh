#!/usr/bin/env bash
# System packages Marill needs (Debian/Ubuntu): libzmq with CURVE (the encrypted links between
# workers, dealer and client; Debian's libzmq3-dev is built with libsodium) and pkg-config to
# find it, the font the benchmark charts are drawn with, and Prometheus (the server and
# promtool: tests/prometheus_live.rs runs the dashboards' queries and the rules in it,
# scripts/check-rules.sh unit-tests the rules; 2.42 on Debian 12), python3-venv (the openai
# package's check of the gateway) and curl. Installs only what is missing.
set -euo pipefail
need=()
pkg-config --exists libzmq 2>/dev/null || need+=(libzmq3-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
# tests/gateway.rs talks to the gateway with curl
command -v curl >/dev/null || need+=(curl)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# without its recommends: prometheus would bring the node exporter along
lean=()
{ command -v prometheus && command -v promtool; } >/dev/null || lean+=(prometheus)
if [ $(( ${#need[@]} + ${#lean[@]} )) -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "installing ${need[*]} ${lean[*]}" >&2
    $sudo_cmd apt-get update -qq
    [ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
    [ ${#lean[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
fi
