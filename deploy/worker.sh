#!/usr/bin/env bash
# Start a worker on this machine, in the foreground (run it under systemd, tmux or a container).
#
#   deploy/worker.sh            a GPU worker: takes shard and training runs, one at a time
#   deploy/worker.sh control    the control worker: takes nightly parent runs (no GPU needed)
#   deploy/worker.sh all        both on one machine with one GPU: a parent and a shard at a time
#
# Needs PREFECT_API_URL pointing at the server, the package installed in this environment and the
# repository checked out at the path the deployments were made from. On a machine with several
# GPUs start one GPU worker per GPU: CUDA_VISIBLE_DEVICES=1 WORKER_NAME=gpu-host-1 deploy/worker.sh
#
# Every flow run this worker starts sends a heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
# seconds (default here 60; at least 30). The zombie automation of deploy/automations.yaml marks a
# Running run Crashed once its heartbeats stop (its worker or process died) for ALLSIDES_ZOMBIE_AFTER_S
# (300): keep this interval well below that.
set -euo pipefail
ROLE="${1:-gpu}"
POOL="${POOL:-gpu}"
case "$ROLE" in
  gpu)     queues=(-q shards);            limit="${LIMIT:-1}" ;;
  control) queues=(-q control);           limit="${LIMIT:-4}" ;;
  all)     queues=(-q control -q shards); limit="${LIMIT:-2}" ;;
  *) echo "usage: $0 [gpu|control|all]" >&2; exit 2 ;;
esac
export TOKENIZERS_PARALLELISM=false
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-60}"
exec prefect worker start --pool "$POOL" "${queues[@]}" --limit "$limit" \
  --name "${WORKER_NAME:-$ROLE-$(hostname)-${CUDA_VISIBLE_DEVICES:-all}}" --no-create-pool-if-not-found
