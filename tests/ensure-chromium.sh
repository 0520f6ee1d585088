#!/bin/sh
# Make sure a Chromium for the browser tests is installed, and print its path as the last
# line on stdout. `make test` runs it and hands the path to pytest.
#
#   AGENTFLOW_TEST_CHROMIUM="$(tests/ensure-chromium.sh | tail -1)"
#
# - A `chromium` (or `chromium-browser`) on PATH: print its path.
# - None: on Debian, as root, install the chromium package; elsewhere, fail in one line
#   saying what to install. Playwright drives it through `executable_path`: nothing is
#   downloaded from a browser CDN.
set -eu

fail() {
  echo "ensure-chromium.sh: $*" >&2
  exit 1
}

find_chromium() {
  command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null
}

if ! path="$(find_chromium)"; then
  [ -f /etc/debian_version ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 ||
    fail "no chromium binary; install chromium (Debian: apt-get install chromium) or set AGENTFLOW_TEST_CHROMIUM"
  echo "ensure-chromium.sh: installing chromium" >&2
  # An empty package index (a fresh image) has to be fetched before anything installs.
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
    fail "apt-get update failed; cannot install chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -q chromium >/dev/null ||
    fail "apt-get install chromium failed"
  path="$(find_chromium)" || fail "chromium installed but no chromium binary on PATH"
fi
echo "$path"
