#!/bin/bash
# InfluxQL on InfluxDB 2.x for rtbench: run once by the influxdb image's entrypoint
# (/docker-entrypoint-initdb.d) after its initial setup, with the influx CLI already
# logged in as the admin.
#
# The collector writes through the v1-compatible /write?db=rtbench and the Grafana
# dashboards query InfluxQL with db=rtbench; on 2.x both need
#   - the bucket rtbench (the image's setup creates it from DOCKER_INFLUXDB_INIT_BUCKET;
#     created here if it was named differently),
#   - a DBRP mapping database rtbench + retention policy autogen -> that bucket,
#   - v1 logins: one that may write (collector), one that may read (Grafana).
set -euo pipefail

org="${DOCKER_INFLUXDB_INIT_ORG:?}"
collector_user="${RTBENCH_INFLUX_COLLECTOR_USER:?}"
collector_password="${RTBENCH_INFLUX_COLLECTOR_PASSWORD:?}"
grafana_user="${RTBENCH_INFLUX_GRAFANA_USER:?}"
grafana_password="${RTBENCH_INFLUX_GRAFANA_PASSWORD:?}"

bucket_id="$(influx bucket list --org "$org" --name rtbench --hide-headers 2>/dev/null | cut -f 1 || true)"
if [ -z "$bucket_id" ]; then
    bucket_id="$(influx bucket create --org "$org" --name rtbench --hide-headers | cut -f 1)"
fi

influx v1 dbrp create --org "$org" --db rtbench --rp autogen --bucket-id "$bucket_id" --default

influx v1 auth create --org "$org" \
    --username "$collector_user" --password "$collector_password" \
    --write-bucket "$bucket_id" --description "rtbench collector (writes database rtbench)"

influx v1 auth create --org "$org" \
    --username "$grafana_user" --password "$grafana_password" \
    --read-bucket "$bucket_id" --description "Grafana (reads database rtbench)"

echo "rtbench: database rtbench/autogen -> bucket $bucket_id; v1 users $collector_user (write), $grafana_user (read)"
