#!/usr/bin/env bash
# Run the whole Chaos Mesh set (chaos/workflow/natsq-chaos-set.yaml) against the current kubectl
# context while chaos/check_loss.py submits tasks through the gateway, then report loss.
#
#   kubectl -n natsq port-forward svc/natsq-gateway 8000 &
#   TOKEN=... chaos/run-in-cluster.sh            # or: make chaos-cluster
#
# Environment: GATEWAY_URL (default http://127.0.0.1:8000), TOKEN (JWT with tasks:write,
# tasks:read, stats:read), RATE (tasks per second, default 5), KUBECTL (default kubectl).
# The set runs about 22 minutes; the load covers it. Exit code: check_loss.py's (0: nothing lost).
# It annotates the natsq namespaces for Chaos Mesh for the duration of the run only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kubectl=${KUBECTL:-kubectl}
gateway=${GATEWAY_URL:-http://127.0.0.1:8000}
rate=${RATE:-5}
tasks=${TASKS:-$((rate * 22 * 60))}
workflow="$here/workflow/natsq-chaos-set.yaml"

cleanup() {
  "$kubectl" delete -f "$workflow" --ignore-not-found
  "$kubectl" annotate ns natsq natsq-data chaos-mesh.org/inject-
}
trap cleanup EXIT

"$kubectl" annotate ns natsq natsq-data chaos-mesh.org/inject=enabled --overwrite
# Chaos Mesh cannot select "the Valkey primary" by label: ask Sentinel which pod it is now.
primary=$("$kubectl" -n natsq-data exec valkey-0 -c sentinel -- sh -c \
  'REDISCLI_AUTH="$(cat /run/secrets/valkey/sentinel-password)" valkey-cli -p 26379 sentinel get-master-addr-by-name mymaster' \
  | head -n 1 | cut -d. -f1)
sed "s/- valkey-0$/- ${primary:-valkey-0}/" "$workflow" | "$kubectl" apply -f -

token_args=()
if [[ -n "${TOKEN:-}" ]]; then
  token_args=(--token "$TOKEN")
fi
python3 "$here/check_loss.py" --url "$gateway" "${token_args[@]}" --tasks "$tasks" --rate "$rate" --timeout 2400
