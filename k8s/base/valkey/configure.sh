#!/bin/sh
# Writes /conf/valkey.conf and /conf/sentinel.conf for this pod. The primary is whichever server
# the running Sentinels name; with no Sentinel answering (first start) it is valkey-0.
set -eu

HEADLESS="${HEADLESS:-valkey-headless.natsq-data.svc.cluster.local}"
MASTER_NAME="${MASTER_NAME:-mymaster}"
CONFIG_DIR="${CONFIG_DIR:-/config}"
OUT_DIR="${OUT_DIR:-/conf}"
PASSWORD_FILE="${PASSWORD_FILE:-/run/secrets/valkey/password}"
SENTINEL_PASSWORD_FILE="${SENTINEL_PASSWORD_FILE:-/run/secrets/valkey/sentinel-password}"
SELF="${SELF:-$(hostname).${HEADLESS}}"
# Bytes, from the valkey container's memory limit (downward API); the rest is headroom for
# replication buffers, AOF rewrites and fragmentation.
MEMORY_LIMIT_BYTES="${MEMORY_LIMIT_BYTES:-1073741824}"

password="$(cat "$PASSWORD_FILE")"
sentinel_password="$(cat "$SENTINEL_PASSWORD_FILE")"

primary=""
for i in 0 1 2; do
  peer="valkey-${i}.${HEADLESS}"
  [ "$peer" = "$SELF" ] && continue
  primary="$(REDISCLI_AUTH="$sentinel_password" timeout 3 valkey-cli -h "$peer" -p 26379 --raw \
    SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
  [ -n "$primary" ] && break
done
[ -n "$primary" ] || primary="valkey-0.${HEADLESS}"
echo "configure: this pod is ${SELF}, primary is ${primary}"

cp "${CONFIG_DIR}/valkey.conf" "${OUT_DIR}/valkey.conf"
cat >> "${OUT_DIR}/valkey.conf" <<CONF
requirepass "${password}"
masterauth "${password}"
replica-announce-ip ${SELF}
maxmemory $((MEMORY_LIMIT_BYTES / 4 * 3))
CONF
if [ "$primary" != "$SELF" ]; then
  echo "replicaof ${primary} 6379" >> "${OUT_DIR}/valkey.conf"
fi

cp "${CONFIG_DIR}/sentinel.conf" "${OUT_DIR}/sentinel.conf"
# requirepass: clients (the app, the exporter, configure.sh) and the other Sentinels must
# authenticate; Sentinels use the same password towards each other. auth-pass: the password this
# Sentinel uses towards Valkey.
cat >> "${OUT_DIR}/sentinel.conf" <<CONF
requirepass "${sentinel_password}"
sentinel announce-ip ${SELF}
sentinel monitor ${MASTER_NAME} ${primary} 6379 2
sentinel auth-pass ${MASTER_NAME} "${password}"
sentinel down-after-milliseconds ${MASTER_NAME} 5000
sentinel failover-timeout ${MASTER_NAME} 60000
sentinel parallel-syncs ${MASTER_NAME} 1
CONF
chmod 0600 "${OUT_DIR}/valkey.conf" "${OUT_DIR}/sentinel.conf"
