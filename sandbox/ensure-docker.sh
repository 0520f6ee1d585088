#!/bin/sh
# Make sure the Docker sandbox tests can run: a Docker daemon that answers, and the
# sandbox image for this version of the runner. `make test` runs it before pytest.
#
#   sandbox/ensure-docker.sh
#
# - `docker info` works: nothing to start.
# - No daemon binary: on Debian, as root, install docker.io and debootstrap; elsewhere,
#   fail and say what to install.
# - A dockerd already runs but does not answer (still starting): wait for it; never
#   start a second one. Otherwise start dockerd detached (it outlives make), logging to
#   $AGENTFLOW_DOCKERD_LOG, and wait up to $AGENTFLOW_DOCKER_WAIT_S seconds (60).
# - The image tag comes from agentflow.sandbox.docker.image_tag(); a missing image is
#   built by sandbox/build-base.sh (debootstrap; no registry needed).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
python="${AGENTFLOW_PYTHON:-$root/.venv/bin/python}"
log="${AGENTFLOW_DOCKERD_LOG:-/tmp/agentflow-dockerd.log}"
wait_s="${AGENTFLOW_DOCKER_WAIT_S:-60}"

fail() {
  echo "ensure-docker.sh: $*" >&2
  exit 1
}

docker_answers() {
  command -v docker >/dev/null 2>&1 || return 1
  if command -v timeout >/dev/null 2>&1; then
    timeout 10 docker info >/dev/null 2>&1
  else
    docker info >/dev/null 2>&1
  fi
}

dockerd_running() {
  if command -v pgrep >/dev/null 2>&1; then
    pgrep -x dockerd >/dev/null 2>&1
    return
  fi
  [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null
}

. "$here/apt.sh"

wait_for_daemon() {
  command -v docker >/dev/null 2>&1 || fail "the docker CLI is missing; install docker.io (or docker-ce-cli)"
  started="${1:-}"
  deadline=$(($(date +%s) + wait_s))
  until docker_answers; do
    if [ -n "$started" ] && ! kill -0 "$started" 2>/dev/null; then
      fail "dockerd exited at start-up: $(tail -n 1 "$log" 2>/dev/null) (log: $log)"
    fi
    # Readiness of a daemon we do not control: there is nothing to block on but polling.
    [ "$(date +%s)" -lt "$deadline" ] ||
      fail "dockerd did not answer \`docker info\` within ${wait_s}s (log: $log; DOCKER_HOST=${DOCKER_HOST:-unset})"
    sleep 1
  done
}

if ! docker_answers; then
  if ! dockerd_running && ! command -v dockerd >/dev/null 2>&1; then
    apt_install "docker.io debootstrap" \
      "dockerd is missing; install docker.io debootstrap (Debian: apt-get install docker.io debootstrap)"
  fi
  # The package's install scripts may have started one already: never start a second.
  if ! dockerd_running; then
    [ "$(id -u)" = 0 ] || fail "no Docker daemon answers and only root can start dockerd; start it (sudo dockerd) or use the process sandbox"
    echo "ensure-docker.sh: starting dockerd (log: $log)" >&2
    # Its own session, so make's Ctrl-C and exit leave it running.
    if command -v setsid >/dev/null 2>&1; then
      nohup setsid dockerd >"$log" 2>&1 </dev/null &
    else
      nohup dockerd >"$log" 2>&1 </dev/null &
    fi
    wait_for_daemon $!
  else
    wait_for_daemon
  fi
fi

[ -x "$python" ] || fail "no Python at $python; run make's virtualenv step first (or set AGENTFLOW_PYTHON)"
tag="$("$python" -c 'from agentflow.sandbox.docker import image_tag; print(image_tag())')" ||
  fail "could not compute the sandbox image tag with $python"
if ! docker image inspect "$tag" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 ||
    apt_install debootstrap "debootstrap is missing; install debootstrap (Debian: apt-get install debootstrap)"
  echo "ensure-docker.sh: building the sandbox image $tag" >&2
  "$here/build-base.sh" "$tag" >/dev/null || fail "building the sandbox image $tag failed"
fi
