#!/usr/bin/env bash
# `make demo`: the support agent (graphs/support.py) on the embedded tiers of
# agentflow.toml (Gemma 3 270M on this CPU; no keys, no GPU, no network), told as three
# conversations, each command shown before it runs:
#
#   1. an order question, answered from the tools' results;
#   2. a refund over the approval limit: it waits for a person, a reviewer approves it
#      from the terminal, the thread resumes, and the refund row is in the shop's database;
#   3. a customer who asks for a person: told one is coming, then answered by one.
#
# Each turn prints what the customer said, every tool call with its arguments and
# result, the agent's reply, and each model call's node, tier, reason, tokens and cost.
# It ends with the time it took (the target is 5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# Checkpoints revive only the graph state's own types, as production should run.
export LANGGRAPH_STRICT_MSGPACK=true

threads=.agentflow/demo-threads.sqlite
db="sqlite:///$threads"
rm -f "$threads" "$threads-wal" "$threads-shm"

if [ -t 1 ]; then bold=$'\033[1m' dim=$'\033[2m' plain=$'\033[0m'; else bold="" dim="" plain=""; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() {
  local shown="" arg
  for arg in "$@"; do
    case "$arg" in *[[:space:]\'\"]*) arg="\"${arg//\"/\\\"}\"" ;; esac
    shown+="${shown:+ }$arg"
  done
  printf '%s$ %s%s\n' "$dim" "$shown" "$plain"
  "$@"
}
turn() { run agentflow run graphs/support.py --database "$db" --customer-email ada@example.com "$@"; }

# The tools that read what the customer writes (refunds, address changes, tickets, the
# help-centre search) run in the Docker sandbox: a daemon and the sandbox image.
run sandbox/ensure-docker.sh
run agentflow demo seed

say "1. A question the tools answer"
turn --thread demo-order -m "Where is my order 1042?"

say "2. A refund over the approval limit waits for a person"
turn --thread demo-refund -m "My laptop from order 1043 arrived broken. Please refund the full 1249 USD."
run agentflow inbox list --status pending --database "$db"

say "A reviewer approves it from the terminal; the thread resumes, and the refund is written"
run agentflow inbox resolve --thread demo-refund --approve --by sam --database "$db"
run agentflow demo refunds --order 1043

say "3. A customer who wants a person"
turn --thread demo-human -m "I want to talk to a human, please."
run agentflow inbox resolve --thread demo-human --by sam --database "$db" \
  --reply "Hi Ada, Sam here. I'll sort this out with you."

printf '\n== The demo took %dm%02ds (target: at most 5 minutes on 2 cores).\n' \
  $((SECONDS / 60)) $((SECONDS % 60))
