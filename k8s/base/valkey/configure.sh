#!/bin/sh
# Writes /conf/valkey.conf, /conf/users.acl, /conf/sentinel.conf and /conf/cli (valkey-cli with
# this pod's TLS options) for this pod. The primary is whichever server the running Sentinels name;
# with no Sentinel answering (first start) it is valkey-0.
# With TLS_DIR set (k8s/components/tls mounts the pod's certificate there: tls.crt, tls.key,
# ca.crt) Valkey and Sentinel listen on TLS only, replicate over TLS and require client certificates.
set -eu

HEADLESS="${HEADLESS:-valkey-headless.natsq-data.svc.cluster.local}"
MASTER_NAME="${MASTER_NAME:-mymaster}"
CONFIG_DIR="${CONFIG_DIR:-/config}"
OUT_DIR="${OUT_DIR:-/conf}"
SECRETS_DIR="${SECRETS_DIR:-/run/secrets/valkey}"
# The key prefix of the app's ACL users: NATSQ_NAMESPACE of the app (tests/k8s checks they agree).
NATSQ_NAMESPACE="${NATSQ_NAMESPACE:-natsq}"
TLS_DIR="${TLS_DIR:-}"
SELF="${SELF:-$(hostname).${HEADLESS}}"
# Bytes, from the valkey container's memory limit (downward API); the rest is headroom for
# replication buffers, AOF rewrites and fragmentation.
MEMORY_LIMIT_BYTES="${MEMORY_LIMIT_BYTES:-1073741824}"

secret() { cat "${SECRETS_DIR}/$1"; }
sentinel_password="$(secret sentinel-password)"

cli_tls=""
if [ -n "$TLS_DIR" ]; then
  cli_tls="--tls --cacert ${TLS_DIR}/ca.crt --cert ${TLS_DIR}/tls.crt --key ${TLS_DIR}/tls.key"
fi
# Probes and operators use this: `sh /conf/cli -p 26379 ping`.
printf '#!/bin/sh\nexec valkey-cli %s "$@"\n' "$cli_tls" > "${OUT_DIR}/cli"

primary=""
for i in 0 1 2; do
  peer="valkey-${i}.${HEADLESS}"
  [ "$peer" = "$SELF" ] && continue
  primary="$(REDISCLI_AUTH="$sentinel_password" timeout 3 sh "${OUT_DIR}/cli" -h "$peer" -p 26379 --raw \
    SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
  [ -n "$primary" ] && break
done
[ -n "$primary" ] || primary="valkey-0.${HEADLESS}"
echo "configure: this pod is ${SELF}, primary is ${primary}"

# users.acl is a template (Valkey allows no comments in ACL files): fill in ${NAMESPACE} and the
# app's passwords literally (a password may hold characters sed or awk's gsub would interpret).
NAMESPACE="$NATSQ_NAMESPACE" GATEWAY_PASSWORD="$(secret gateway-password)" \
WORKER_PASSWORD="$(secret worker-password)" awk '
  function fill(line, name,   out, i, token) {
    token = "${" name "}"
    out = ""
    while ((i = index(line, token)) > 0) {
      out = out substr(line, 1, i - 1) ENVIRON[name]
      line = substr(line, i + length(token))
    }
    return out line
  }
  { print fill(fill(fill($0, "NAMESPACE"), "GATEWAY_PASSWORD"), "WORKER_PASSWORD") }
' "${CONFIG_DIR}/users.acl" > "${OUT_DIR}/users.acl"
# The server's own users: `default` for operators and the probes, replication between the
# servers, the metrics exporter (read-only server state, no keys) and Sentinel (monitoring and
# failover commands, no keys). None of them is the app's.
cat >> "${OUT_DIR}/users.acl" <<ACL
user default on >$(secret password) ~* &* +@all
user replication on >$(secret replication-password) resetkeys resetchannels -@all +psync +replconf +ping
user exporter on >$(secret exporter-password) resetkeys resetchannels -@all +ping +info +config|get +client|list +client|info +client|setname +slowlog|get +slowlog|len +latency|latest +latency|histogram +memory|stats +dbsize +select
user sentinel on >$(secret sentinel-user-password) resetkeys allchannels -@all +ping +info +role +multi +exec +slaveof +replicaof +subscribe +publish +config|rewrite +client|setname +client|kill +script|kill
ACL

cp "${CONFIG_DIR}/valkey.conf" "${OUT_DIR}/valkey.conf"
cat >> "${OUT_DIR}/valkey.conf" <<CONF
aclfile ${OUT_DIR}/users.acl
masteruser replication
masterauth "$(secret replication-password)"
replica-announce-ip ${SELF}
maxmemory $((MEMORY_LIMIT_BYTES / 4 * 3))
CONF
if [ "$primary" != "$SELF" ]; then
  echo "replicaof ${primary} 6379" >> "${OUT_DIR}/valkey.conf"
fi

cp "${CONFIG_DIR}/sentinel.conf" "${OUT_DIR}/sentinel.conf"
# requirepass: clients (the app, the exporter, configure.sh) and the other Sentinels must
# authenticate; Sentinels use the same password towards each other. auth-user/auth-pass: the ACL
# user this Sentinel is towards Valkey (not a data user).
cat >> "${OUT_DIR}/sentinel.conf" <<CONF
requirepass "${sentinel_password}"
sentinel announce-ip ${SELF}
sentinel monitor ${MASTER_NAME} ${primary} 6379 2
sentinel auth-user ${MASTER_NAME} sentinel
sentinel auth-pass ${MASTER_NAME} "$(secret sentinel-user-password)"
sentinel down-after-milliseconds ${MASTER_NAME} 5000
sentinel failover-timeout ${MASTER_NAME} 60000
sentinel parallel-syncs ${MASTER_NAME} 1
CONF

if [ -n "$TLS_DIR" ]; then
  for conf in valkey.conf sentinel.conf; do
    cat >> "${OUT_DIR}/${conf}" <<CONF
port 0
tls-port $([ "$conf" = valkey.conf ] && echo 6379 || echo 26379)
tls-cert-file ${TLS_DIR}/tls.crt
tls-key-file ${TLS_DIR}/tls.key
tls-ca-cert-file ${TLS_DIR}/ca.crt
tls-auth-clients yes
tls-replication yes
CONF
  done
fi
chmod 0600 "${OUT_DIR}/valkey.conf" "${OUT_DIR}/sentinel.conf" "${OUT_DIR}/users.acl"
