#!/usr/bin/env bash
# Installs everything farm's tests need on a fresh Debian machine: the renderers
# (Debian's blender; Mapnik and ffmpeg come from PyPI), tools the tests use
# (rsync, iproute2 for network namespaces, nftables for their firewall), farm itself with its test extras, and the
# example third-party plugin (tests exercise it through the entry-point group).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # tests verify packaging/systemd's units
command -v blender >/dev/null 2>&1 || missing+=(blender)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the dashboard's browser tests
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v nft >/dev/null 2>&1 || missing+=(nftables)  # the namespace firewall in tests/test_discovery.py
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q -e ".[test]" -e examples/farm-mandelbrot
# An editable install leaves farm's modules uncompiled, and where PYTHONDONTWRITEBYTECODE is set
# (as on CI) every farm process (the submitter, each agent, each worker) compiled them again at
# every start: a quarter of a `farm submit`'s start-up CPU. Python reads compiled files whatever
# that variable says; a source edited since is compiled again in memory, as before.
python3 -m compileall -q -j 0 farm plugins examples/farm-mandelbrot >/dev/null
