# Sourced by sandbox/ensure-docker.sh and tests/ensure-*.sh, which define `fail`.

# apt_install PACKAGES UNAVAILABLE: install PACKAGES (space-separated) with apt-get, on
# Debian as root; anywhere else, fail with UNAVAILABLE (what to install by hand).
apt_install() {
  [ -f /etc/debian_version ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 ||
    fail "$2"
  echo "$(basename "$0"): installing $1" >&2
  # An empty package index (a fresh image) has to be fetched before anything installs.
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
    fail "apt-get update failed; cannot install $1"
  # shellcheck disable=SC2086 # $1 is a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -q $1 >/dev/null ||
    fail "apt-get install $1 failed"
}
