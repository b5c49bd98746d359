#!/usr/bin/env bash
# Install the Debian packages the test suite can use, if missing and if we may.
set -u
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v openssl >/dev/null 2>&1 || want+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
command -v mosquitto >/dev/null 2>&1 || want+=(mosquitto)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not root or no apt-get; tests needing ${want[*]} will skip" >&2
  exit 0
fi
echo "system-deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
for pkg in "${want[@]}"; do
  apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
    || echo "system-deps: could not install $pkg; tests needing it will skip" >&2
done
exit 0
