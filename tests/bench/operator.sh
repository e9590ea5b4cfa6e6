#!/usr/bin/env bash
# Operator scale benchmark, one command:
#
#   bash tests/bench/operator.sh             # 1,000 TwitterStreams
#   bash tests/bench/operator.sh --count 200
#
# On the local control plane and Kafka (tests/env/up) it measures, in the same run:
#   reference: `kubectl apply --server-side` of the 2N Deployments the operator
#              would render for N streams (rendered by the operator's own code);
#   operator:  `kubectl apply --server-side` of the N TwitterStreams, then the
#              operator (release build) until every stream has both Deployments
#              and status.observedGeneration (it also creates N Kafka topics
#              and records Events, which the reference does not do).
# and reports seconds for each, their ratio, and the operator's peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
count=1000
while [ $# -gt 0 ]; do
  case $1 in
  --count) count=$2; shift 2 ;;
  *) echo "usage: $0 [--count N]" >&2; exit 2 ;;
  esac
done
env_exports=$(tests/env/up) # an assignment, so a failed start stops the script (eval "$(...)" would not)
eval "$env_exports"
export KUBECONFIG
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release -p twitterstream-operator --bin twitterstream-operator
cargo build --quiet --release -p twitterstream-tests --bin operator-bench-render
render=$target/release/operator-bench-render
work=$(mktemp -d)
ns_ref=bench-ref-$$ ns_op=bench-op-$$
op_pid=
cleanup() {
  if [ -n "$op_pid" ]; then kill "$op_pid" 2>/dev/null || true; fi
  kubectl delete namespace "$ns_ref" "$ns_op" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
kubectl apply --server-side -f crds/ >/dev/null
kubectl create namespace "$ns_ref" >/dev/null
kubectl create namespace "$ns_op" >/dev/null
"$render" streams --count "$count" --brokers "$KAFKA_BROKERS" --namespace "$ns_op" >"$work/streams.yaml"
"$render" children --count "$count" --brokers "$KAFKA_BROKERS" --namespace "$ns_ref" >"$work/children.yaml"

now() { date +%s.%N; }
count_deployments() { kubectl get deployments -n "$1" --no-headers 2>/dev/null | wc -l; }

echo "reference: kubectl apply --server-side of $((count * 2)) Deployments" >&2
t0=$(now)
kubectl apply --server-side -n "$ns_ref" -f "$work/children.yaml" >/dev/null
t1=$(now)
[ "$(count_deployments "$ns_ref")" -eq $((count * 2)) ] || { echo "reference run is missing Deployments" >&2; exit 1; }
ref=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')

echo "operator: $count TwitterStreams" >&2
# With the environment the chart's Deployment gives it.
MALLOC_ARENA_MAX=2 "$target/release/twitterstream-operator" --watch-namespaces "$ns_op" --http-addr 127.0.0.1:0 \
  --worker-image ghcr.io/twitterstream-io/twitterstream-workers:bench >"$work/operator.log" 2>&1 &
op_pid=$!
t0=$(now)
kubectl apply --server-side -n "$ns_op" -f "$work/streams.yaml" >/dev/null
while :; do
  d=$(count_deployments "$ns_op")
  o=$(kubectl get tws -n "$ns_op" -o jsonpath='{range .items[*]}{.status.observedGeneration}{"\n"}{end}' | grep -c . || true)
  [ "$d" -ge $((count * 2)) ] && [ "$o" -ge "$count" ] && break
  kill -0 "$op_pid" 2>/dev/null || { echo "operator exited; see $work/operator.log" >&2; tail -5 "$work/operator.log" >&2; exit 1; }
  sleep 0.5
done
t1=$(now)
op=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$op_pid/status")
printf '\n%-58s %8s\n' "what ($count streams, $((count * 2)) Deployments)" seconds
printf '%-58s %8.1f\n' "kubectl apply --server-side of the rendered Deployments" "$ref"
printf '%-58s %8.1f\n' "operator: apply TwitterStreams -> Deployments + status" "$op"
awk -v o="$op" -v r="$ref" -v k="$rss_kb" 'BEGIN {
  printf "operator / kubectl time ratio: %.2f (target <= 1.0)\n", o / r
  printf "operator peak RSS (VmHWM): %.1f MB (target <= 32 MB)\n", k / 1024
}'
