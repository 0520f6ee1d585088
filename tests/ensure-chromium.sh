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

. "$(dirname "$0")/../sandbox/apt.sh"

find_chromium() {
  command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null
}

if ! path="$(find_chromium)"; then
  apt_install chromium \
    "no chromium binary; install chromium (Debian: apt-get install chromium) or set AGENTFLOW_TEST_CHROMIUM"
  path="$(find_chromium)" || fail "chromium installed but no chromium binary on PATH"
fi
echo "$path"
