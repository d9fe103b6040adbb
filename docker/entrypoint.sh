#!/bin/sh
# autopeft container roles: api | ray-head | ray-worker | <any command>
#
#   api         joins the Ray cluster as a zero-CPU node (a Ray driver needs a raylet on its own
#               host; the report hub actor lives there), then runs `autopeft serve`, which applies
#               the Alembic migrations before it serves.
#   ray-head    the cluster's GCS; no trials here (--num-cpus=0 unless RAY_HEAD_CPUS is set).
#   ray-worker  a node that runs trials with the container's CPUs and GPUs.
#
# Environment: RAY_AUTH_TOKEN (all roles, required), RAY_HEAD_ADDRESS (default ray-head:6379),
# AUTOPEFT_* for the controller (see docs/operations.md).
set -eu

role="${1:-api}"
head="${RAY_HEAD_ADDRESS:-ray-head:6379}"
node_ip="$(hostname -i | awk '{print $1}')"
: "${RAY_AUTH_TOKEN:?set RAY_AUTH_TOKEN (the Ray cluster token)}"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN RAY_USAGE_STATS_ENABLED=0

wait_for_head() {
    i=0
    until ray status --address="$head" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 120 ] || { echo "ray head $head not reachable" >&2; exit 1; }
        sleep 1
    done
}

case "$role" in
    api)
        wait_for_head
        ray start --address="$head" --node-ip-address="$node_ip" --num-cpus=0 --num-gpus=0
        exec autopeft serve --executor ray --ray-address "$head" \
            --host "${AUTOPEFT_HOST:-0.0.0.0}" --port "${AUTOPEFT_PORT:-8642}"
        ;;
    ray-head)
        exec ray start --head --block --node-ip-address="$node_ip" --port=6379 \
            --num-cpus="${RAY_HEAD_CPUS:-0}" --num-gpus=0 --include-dashboard=false
        ;;
    ray-worker)
        wait_for_head
        set -- --address="$head" --node-ip-address="$node_ip" --block
        [ -n "${RAY_WORKER_CPUS:-}" ] && set -- "$@" --num-cpus="$RAY_WORKER_CPUS"
        [ -n "${RAY_WORKER_RESOURCES:-}" ] && set -- "$@" --resources="$RAY_WORKER_RESOURCES"
        exec ray start "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
