#!/usr/bin/env bash
# Create (or update) the `gpu` work pool and its two queues. Idempotent: safe to rerun.
#
#   GPU_SLOTS=4 deploy/pool.sh          4 GPUs in total across the worker machines
#
# Queues: `shards` (score-shard and train-model runs; one per GPU at a time, capped at GPU_SLOTS)
# and `control` (the nightly parent, which only waits and aggregates; higher priority so a night
# starts even while shards of another run are queued). The pool limit is GPU_SLOTS + CONTROL_SLOTS.
# POOL_TYPE=process (default) runs flows as subprocesses on the worker's machine; for Kubernetes use
# POOL_TYPE=kubernetes BASE_JOB_TEMPLATE=deploy/k8s-gpu-job-template.json (needs prefect-kubernetes).
set -euo pipefail
POOL="${POOL:-gpu}"
POOL_TYPE="${POOL_TYPE:-process}"
GPU_SLOTS="${GPU_SLOTS:-1}"
CONTROL_SLOTS="${CONTROL_SLOTS:-1}"
args=(work-pool create "$POOL" --type "$POOL_TYPE" --overwrite)
if [[ -n "${BASE_JOB_TEMPLATE:-}" ]]; then
  args+=(--base-job-template "$BASE_JOB_TEMPLATE")
fi
prefect "${args[@]}"
prefect work-pool set-concurrency-limit "$POOL" "$((GPU_SLOTS + CONTROL_SLOTS))"
# `work-queue create` fails on an existing queue; then only its limit is updated.
prefect work-queue create control --pool "$POOL" --priority 1 --limit "$CONTROL_SLOTS" 2>/dev/null \
  || prefect work-queue set-concurrency-limit control "$CONTROL_SLOTS" --pool "$POOL"
prefect work-queue create shards --pool "$POOL" --priority 2 --limit "$GPU_SLOTS" 2>/dev/null \
  || prefect work-queue set-concurrency-limit shards "$GPU_SLOTS" --pool "$POOL"
prefect work-pool inspect "$POOL" >/dev/null
echo "pool $POOL ($POOL_TYPE): limit $((GPU_SLOTS + CONTROL_SLOTS)); queues control ($CONTROL_SLOTS), shards ($GPU_SLOTS)"
