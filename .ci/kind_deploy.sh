#!/usr/bin/env bash
# Deploy natsq to a kind cluster and smoke-test it: the release workflow's `smoke-deploy` job and
# `make kind-deploy` on a developer's machine run exactly this.
#
#   .ci/kind_deploy.sh            # create/reuse kind cluster `natsq`, build the image if missing
#   IMAGE=ghcr.io/natsq/natsq:0.0.0-ci.abc1234 .ci/kind_deploy.sh   # an image already built
#
# Steps: kind cluster (created when missing) -> load the image -> kubectl apply -k of the ci
# overlay with that image -> rollout status of every Deployment and StatefulSet -> smoke test
# (.ci/smoke_test.py through port-forwards). On failure: events, pod states and logs are
# printed, and the app Deployments are rolled back (`kubectl rollout undo`).
#
# Needs docker, kind, kubectl and the project venv (make venv). Nothing here needs a cloud
# operator: the ci overlay uses generated secrets and no custom resources.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-natsq}"
IMAGE="${IMAGE:-ghcr.io/natsq/natsq:0.0.0-ci.$(git rev-parse --short=12 HEAD)}"
OVERLAY=k8s/overlays/ci
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-600s}"
PY="${PY:-.venv/bin/python}"
# Where the one-off kustomization that layers $IMAGE on the overlay lives (ignored by Git).
WORK=.cache/kind-deploy
APP_NAMESPACE=natsq
NAMESPACES=(natsq natsq-data)

log() { printf '\n==> %s\n' "$*"; }

PORT_FORWARDS=()
cleanup() {
  for pid in "${PORT_FORWARDS[@]}"; do kill "${pid}" 2>/dev/null || true; done
}
trap cleanup EXIT

diagnose_and_roll_back() {
  log "deploy FAILED: events, pods and logs"
  for ns in "${NAMESPACES[@]}"; do
    kubectl -n "${ns}" get pods -o wide || true
    kubectl -n "${ns}" get events --sort-by=.lastTimestamp | tail -n 60 || true
    for pod in $(kubectl -n "${ns}" get pods -o name 2>/dev/null); do
      echo "--- ${ns}/${pod#pod/}"
      kubectl -n "${ns}" logs "${pod}" --all-containers --prefix --tail=100 || true
      kubectl -n "${ns}" logs "${pod}" --all-containers --prefix --previous --tail=50 2>/dev/null || true
    done
  done
  log "rolling back the app Deployments"
  for deployment in natsq-gateway natsq-worker; do
    # A first deployment has no earlier revision to go back to: say so and go on.
    kubectl -n "${APP_NAMESPACE}" rollout undo "deployment/${deployment}" \
      || echo "no earlier revision of ${deployment} to roll back to"
  done
}

if ! kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  log "creating kind cluster ${CLUSTER}"
  kind create cluster --name "${CLUSTER}" --wait 120s
fi
kubectl config use-context "kind-${CLUSTER}" >/dev/null

if ! docker image inspect "${IMAGE}" >/dev/null 2>&1; then
  log "building ${IMAGE}"
  docker build -t "${IMAGE}" .
fi
log "loading ${IMAGE} into kind"
kind load docker-image "${IMAGE}" --name "${CLUSTER}"

# `kubectl apply -k` of the ci overlay, with the image under test on top: a one-off
# kustomization (kustomize accepts only relative paths to the overlay).
mkdir -p "${WORK}"
cat >"${WORK}/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../${OVERLAY}
images:
  - name: ghcr.io/natsq/natsq
    newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}
EOF

trap 'diagnose_and_roll_back; cleanup' ERR

log "kubectl apply -k ${OVERLAY} (image ${IMAGE})"
# A Job's pod template cannot change in place: the bootstrap Job of an earlier deployment goes
# first, and runs again with this image (it declares the streams, docs/kubernetes.md).
kubectl -n "${APP_NAMESPACE}" delete job natsq-bootstrap --ignore-not-found
kubectl apply --server-side -k "${WORK}"
log "waiting for the streams (Job natsq-bootstrap)"
kubectl -n "${APP_NAMESPACE}" wait --for=condition=complete job/natsq-bootstrap --timeout="${ROLLOUT_TIMEOUT}"

log "waiting for every rollout"
for ns in "${NAMESPACES[@]}"; do
  for workload in $(kubectl -n "${ns}" get deployments,statefulsets -o name); do
    kubectl -n "${ns}" rollout status "${workload}" --timeout="${ROLLOUT_TIMEOUT}"
  done
done

log "smoke test"
gateway_port=18000
worker_port=19191
kubectl -n "${APP_NAMESPACE}" port-forward svc/natsq-gateway "${gateway_port}:8000" >/dev/null &
PORT_FORWARDS+=("$!")
worker_pod=$(kubectl -n "${APP_NAMESPACE}" get pods -l app.kubernetes.io/component=worker \
  --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
kubectl -n "${APP_NAMESPACE}" port-forward "pod/${worker_pod}" "${worker_port}:9191" >/dev/null &
PORT_FORWARDS+=("$!")
# The dev credentials the overlay generated (Secret natsq-app, name suffixed with a hash).
kubectl -n "${APP_NAMESPACE}" get secrets -l app.kubernetes.io/component=secrets \
  -o jsonpath='{.items[0].data.jwt-secret}' | base64 -d >"${WORK}/jwt-secret"
"${PY}" .ci/smoke_test.py \
  --url "http://127.0.0.1:${gateway_port}" \
  --worker-metrics-url "http://127.0.0.1:${worker_port}" \
  --jwt-secret-file "${WORK}/jwt-secret" \
  --timeout 120

trap - ERR
log "natsq ${IMAGE} is deployed on kind-${CLUSTER} and passed the smoke test"
