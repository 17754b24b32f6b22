"""Invariants over the rendered output of every overlay: what a reviewer would otherwise check by eye."""

import re

import pytest

from k8s_app_env import known_app_env_vars
from k8s_manifests import (
    Rendered,
    app_containers,
    containers,
    name_of,
    pod_labels,
    pod_spec,
    probe_port,
    resolve_port,
    selector_matches,
)

# Created by terraform/modules/cluster-addons (charts/natsq-platform), referenced by the ExternalSecrets.
CLUSTER_SECRET_STORE = "vault-natsq"

RESTRICTED_VOLUME_TYPES = {"configMap", "downwardAPI", "emptyDir", "projected", "secret", "csi",
                           "persistentVolumeClaim", "ephemeral", "image"}


def _namespaced(obj: dict) -> str:
    return obj["metadata"].get("namespace", "")


# --- labels and selectors -----------------------------------------------------------------------

def test_workload_selectors_match_their_pod_labels(rendered: Rendered):
    for w in rendered.workloads():
        if w["kind"] == "Job":
            continue  # Kubernetes generates a Job's selector
        assert selector_matches(w["spec"]["selector"], pod_labels(w)), name_of(w)


def test_every_object_has_standard_labels(rendered: Rendered):
    for obj in rendered.objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "natsq", name_of(obj)
        if obj["kind"] != "Namespace":
            assert "app.kubernetes.io/name" in labels, name_of(obj)


def test_services_select_pods_and_target_declared_ports(rendered: Rendered):
    for svc in rendered.of_kind("Service"):
        selector = svc["spec"].get("selector")
        assert selector, f"{name_of(svc)} has no selector"
        pods = rendered.pods_selected(_namespaced(svc), {"matchLabels": selector})
        assert pods, f"{name_of(svc)} selects no pods"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in pods:
                assert resolve_port(target, containers(w, init=False)) is not None, (
                    f"{name_of(svc)} port {port['name']} targets {target!r}, not a port of {name_of(w)}")


def test_probes_use_declared_container_ports(rendered: Rendered):
    for w in rendered.workloads():
        for c in containers(w, init=False):
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if kind in c and (port := probe_port(c[kind])) is not None:
                    assert resolve_port(port, [c]) is not None, f"{name_of(w)} {c['name']} {kind} port {port}"


def test_disruption_budgets_and_autoscalers_point_at_workloads(rendered: Rendered):
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        assert len(rendered.pods_selected(_namespaced(pdb), pdb["spec"]["selector"])) == 1, name_of(pdb)
    for scaler in rendered.of_kind("HorizontalPodAutoscaler", "ScaledObject"):
        ref = scaler["spec"]["scaleTargetRef"]
        assert rendered.get(ref.get("kind", "Deployment"), ref["name"], _namespaced(scaler)), name_of(scaler)


def test_each_deployment_has_exactly_one_autoscaler(rendered: Rendered):
    for deployment in rendered.of_kind("Deployment"):
        name, ns = deployment["metadata"]["name"], _namespaced(deployment)
        scalers = [s for s in rendered.of_kind("HorizontalPodAutoscaler", "ScaledObject")
                   if _namespaced(s) == ns and s["spec"]["scaleTargetRef"]["name"] == name]
        assert len(scalers) == 1, f"{name_of(deployment)}: {[name_of(s) for s in scalers]}"
        # The autoscaler owns the count: a `replicas` in Git would reset it on every apply.
        assert "replicas" not in deployment["spec"], name_of(deployment)
    gateway_hpa = rendered.get("HorizontalPodAutoscaler", "natsq-gateway", "natsq")
    assert gateway_hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert gateway_hpa["spec"]["minReplicas"] >= 1


# --- Pod Security `restricted` and hardening ----------------------------------------------------

def test_namespaces_enforce_restricted(rendered: Rendered):
    namespaces = {ns["metadata"]["name"]: ns for ns in rendered.of_kind("Namespace")}
    assert {"natsq", "natsq-data", "natsq-monitoring"} <= namespaces.keys()
    for ns in namespaces.values():
        labels = ns["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", name_of(ns)
    for obj in rendered.objects:
        if obj["kind"] not in ("Namespace", "StorageClass", "ClusterSecretStore"):
            assert _namespaced(obj) in namespaces, f"{name_of(obj)} is outside the natsq namespaces"


def test_every_container_meets_pod_security_restricted(rendered: Rendered):
    for w in rendered.workloads():
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{name_of(w)} {host}"
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{name_of(w)} volume {volume['name']}: {kinds}"
        for c in containers(w):
            sc = c.get("securityContext", {})
            where = f"{name_of(w)} container {c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert not sc.get("privileged"), where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
            assert seccomp in ("RuntimeDefault", "Localhost"), where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert not any(p.get("hostPort") for p in c.get("ports", [])), where
        assert spec.get("automountServiceAccountToken") is False, name_of(w)


def test_every_workload_has_resources_probes_and_a_disruption_budget(rendered: Rendered):
    for w in rendered.workloads():
        for c in containers(w):
            resources = c.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{name_of(w)} {c['name']} {bound}"
        if w["kind"] == "Job":
            # Runs to completion: nothing to probe, keep available or spread; but it must end.
            assert w["spec"]["backoffLimit"] and w["spec"]["activeDeadlineSeconds"], name_of(w)
            continue
        for c in containers(w, init=False):
            assert "livenessProbe" in c and "readinessProbe" in c, f"{name_of(w)} {c['name']}"
        budgets = [p for p in rendered.of_kind("PodDisruptionBudget")
                   if _namespaced(p) == _namespaced(w) and selector_matches(p["spec"]["selector"], pod_labels(w))]
        assert len(budgets) == 1, name_of(w)
        assert pod_spec(w).get("topologySpreadConstraints"), f"{name_of(w)} has no topology spread"


def test_rolling_updates_never_drop_below_capacity(rendered: Rendered):
    for d in rendered.of_kind("Deployment"):
        strategy = d["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, name_of(d)


def test_images_are_pinned_to_exact_versions(rendered: Rendered):
    pinned = re.compile(r"^[^@:]+(:v?\d+\.\d+\.\d+[-\w.]*)?(@sha256:[0-9a-f]{64})?$")
    for w in rendered.workloads():
        for c in containers(w):
            image = c["image"]
            assert pinned.match(image) and (":" in image or "@" in image), f"{name_of(w)}: {image}"
            assert not image.endswith(":latest"), image


def test_graceful_termination_covers_running_work(rendered: Rendered):
    worker = rendered.get("Deployment", "natsq-worker", "natsq")
    command = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    shutdown_ms = int(command[command.index("--worker-shutdown-timeout") + 1])
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > shutdown_ms / 1000
    gateway = rendered.get("Deployment", "natsq-gateway", "natsq")
    pre_stop = pod_spec(gateway)["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod_spec(gateway)["terminationGracePeriodSeconds"] >= pre_stop + 30
    nats = rendered.get("StatefulSet", "nats", "natsq-data")
    assert pod_spec(nats)["terminationGracePeriodSeconds"] >= 10 + 30 + 20  # grace + duration + margin


# --- NetworkPolicies ----------------------------------------------------------------------------

def _policies(rendered: Rendered, namespace: str) -> list[dict]:
    return [p for p in rendered.of_kind("NetworkPolicy") if _namespaced(p) == namespace]


def _is_default_deny(policy: dict) -> bool:
    spec = policy["spec"]
    return (spec["podSelector"] == {} and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
            and not spec.get("ingress") and not spec.get("egress"))


def test_every_namespace_denies_by_default(rendered: Rendered):
    for ns in rendered.of_kind("Namespace"):
        assert any(_is_default_deny(p) for p in _policies(rendered, ns["metadata"]["name"])), name_of(ns)


def test_every_pod_is_covered_and_every_service_port_is_reachable(rendered: Rendered):
    for w in rendered.workloads():
        ns, labels = _namespaced(w), pod_labels(w)
        selecting = [p for p in _policies(rendered, ns) if p["spec"]["podSelector"] != {}
                     and selector_matches(p["spec"]["podSelector"], labels)]
        assert selecting, f"{name_of(w)}: no NetworkPolicy selects it specifically"
        allowed_ports = {port["port"] for p in selecting for rule in p["spec"].get("ingress", [])
                         for port in rule.get("ports", [])}
        for svc in rendered.of_kind("Service"):
            if _namespaced(svc) == ns and selector_matches({"matchLabels": svc["spec"]["selector"]}, labels):
                for port in svc["spec"]["ports"]:
                    number = resolve_port(port.get("targetPort", port["port"]), containers(w, init=False))
                    assert number in allowed_ports, f"{name_of(svc)} port {number}: no ingress rule allows it"


def test_network_policies_select_something(rendered: Rendered):
    """No dead policies (a typo in a selector silently allows nothing)."""
    our_namespaces = {_namespaced(w) for w in rendered.workloads()}
    for policy in rendered.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        # natsq-monitoring has no pods (the monitoring stack runs in `monitoring`, installed by Terraform).
        if selector != {} and _namespaced(policy) in our_namespaces:
            assert rendered.pods_selected(_namespaced(policy), selector), f"{name_of(policy)} selects no pod"


# --- NATS ---------------------------------------------------------------------------------------

def _nats(rendered: Rendered) -> tuple[dict, str, dict]:
    sts = rendered.get("StatefulSet", "nats", "natsq-data")
    config_name = next(v["configMap"]["name"] for v in pod_spec(sts)["volumes"] if v["name"] == "config")
    conf = rendered.get("ConfigMap", config_name, "natsq-data")["data"]["nats.conf"]
    container = next(c for c in pod_spec(sts)["containers"] if c["name"] == "nats")
    env = {e["name"]: e for e in container["env"]}
    return sts, conf, env


def test_nats_routes_match_the_replica_count(rendered: Rendered):
    sts, conf, env = _nats(rendered)
    replicas = sts["spec"]["replicas"]
    assert replicas >= 3 and replicas % 2 == 1, "JetStream needs an odd quorum of at least 3"
    routes_block = re.search(r"routes:\s*\[(.*?)\]", conf, re.S).group(1)
    route_vars = re.findall(r"\$(\w+)", routes_block)
    assert len(route_vars) == replicas
    headless = rendered.get("Service", sts["spec"]["serviceName"], "natsq-data")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    cluster_port = resolve_port("cluster", [c for c in pod_spec(sts)["containers"] if c["name"] == "nats"])
    expected = {f"nats://route:$(NATS_ROUTE_PASSWORD)@nats-{i}.{sts['spec']['serviceName']}"
                f".natsq-data.svc.cluster.local:{cluster_port}" for i in range(replicas)}
    assert {env[v]["value"] for v in route_vars} == expected
    names = list(env)
    assert names.index("NATS_ROUTE_PASSWORD") < min(names.index(v) for v in route_vars)


def test_nats_config_is_durable_and_lame_ducks(rendered: Rendered):
    sts, conf, env = _nats(rendered)
    assert re.search(r"sync_interval:\s*always", conf)
    assert re.search(r"server_name:\s*\$SERVER_NAME", conf)
    # The pod name (KEDA's nats-jetstream scaler reaches a consumer's leader at <server_name>.<headless>),
    # or with nats-multicloud a per-cluster prefix + the pod name (unique across the super-cluster).
    if "valueFrom" in env["SERVER_NAME"]:
        assert env["SERVER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    else:
        assert env["SERVER_NAME"]["value"] == "$(NATS_SERVER_NAME_PREFIX)$(POD_NAME)"
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "lame_duck_duration" in conf and "lame_duck_grace_period" in conf
    container = next(c for c in pod_spec(sts)["containers"] if c["name"] == "nats")
    assert "ldm" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz?js-server-only=true"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits == requests, "NATS runs with Guaranteed QoS"
    exporter = next(c for c in pod_spec(sts)["containers"] if c["name"] == "exporter")
    assert "-jsz=all" in exporter["args"] and "-prefix=nats" in exporter["args"]


def test_prod_cloud_overlays_join_the_fleet(all_rendered):
    for name, overlay in all_rendered.items():
        joins = overlay.get("Service", "nats-gateway", "natsq-data") is not None
        assert joins == name.startswith("prod-"), f"{name}: nats-multicloud belongs to the prod-<cloud> overlays"


def test_nats_multicloud_wiring(rendered: Rendered):
    """nats-multicloud: include, ConfigMap, certificates, load balancer and NetworkPolicies fit together."""
    gateway_svc = rendered.get("Service", "nats-gateway", "natsq-data")
    if gateway_svc is None:
        return
    sts, conf, env = _nats(rendered)
    spec = pod_spec(sts)
    container = next(c for c in spec["containers"] if c["name"] == "nats")
    config_name = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "config")
    config = rendered.get("ConfigMap", config_name, "natsq-data")["data"]
    entry = container["args"][container["args"].index("--config") + 1]
    assert entry == "/etc/nats/nats-multicloud.conf"
    includes = re.findall(r"^include\s+(\S+)$", config["nats-multicloud.conf"], re.M)
    assert includes == ["./nats.conf", "../nats-multicloud/multicloud.conf"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    # include paths are relative to /etc/nats: ../nats-multicloud is the ConfigMap's mount.
    multicloud_cm = volumes[mounts["/etc/nats-multicloud"]]["configMap"]["name"]
    multicloud = rendered.get("ConfigMap", multicloud_cm, "natsq-data")["data"]
    assert {"multicloud.conf", "cluster-name", "server-name-prefix"} <= set(multicloud)
    assert env["NATS_CLUSTER_NAME"]["valueFrom"]["configMapKeyRef"] == {"name": multicloud_cm, "key": "cluster-name"}
    assert env["NATS_SERVER_NAME_PREFIX"]["valueFrom"]["configMapKeyRef"] == {
        "name": multicloud_cm, "key": "server-name-prefix"}
    assert re.search(r"^\s*name:\s*\$NATS_CLUSTER_NAME$", conf, re.M), "the gateway name must equal the cluster name"
    # Certificates where multicloud-topology's config expects them, from Vault.
    externals = {e["spec"]["target"]["name"]: e for e in rendered.of_kind("ExternalSecret")
                 if _namespaced(e) == "natsq-data"}
    for kind in ("gateway", "leaf"):
        secret = volumes[mounts[f"/etc/nats-certs/{kind}"]]["secret"]
        assert secret["optional"] is True, "a cluster that joins no fleet starts without certificates"
        keys = {d["secretKey"] for d in externals[secret["secretName"]]["spec"]["data"]}
        assert keys == {"tls.crt", "tls.key", "ca.crt"}
    # Gateway (7222) and leaf-node (7422) ports: container, load balancer, both policy directions.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["gateway"] == 7222 and ports["leafnodes"] == 7422
    assert gateway_svc["spec"]["type"] == "LoadBalancer"
    assert {p["port"] for p in gateway_svc["spec"]["ports"]} == {7222, 7422}
    policies = [p for p in _policies(rendered, "natsq-data")
                if selector_matches(p["spec"]["podSelector"], pod_labels(sts))]
    ingress = {port["port"] for p in policies for rule in p["spec"].get("ingress", []) for port in rule.get("ports", [])}
    egress = {port["port"] for p in policies for rule in p["spec"].get("egress", []) for port in rule.get("ports", [])}
    assert {7222, 7422} <= ingress and {7222, 7422} <= egress


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
    return int(number) * units.get(unit, 1)


def test_nats_go_memory_limit_is_about_80_percent_of_the_container_limit(rendered: Rendered):
    sts, _, env = _nats(rendered)
    container = next(c for c in pod_spec(sts)["containers"] if c["name"] == "nats")
    ratio = _bytes(env["GOMEMLIMIT"]["value"]) / _bytes(container["resources"]["limits"]["memory"])
    assert 0.7 <= ratio <= 0.9, ratio


def test_env_references_point_at_earlier_variables(rendered: Rendered):
    for w in rendered.workloads():
        for c in containers(w):
            seen = set()
            for e in c.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert ref in seen, f"{name_of(w)} {c['name']}: {e['name']} uses $({ref}) before it is set"
                seen.add(e["name"])


# --- the app's configuration --------------------------------------------------------------------

def _app_env(rendered: Rendered, container: dict, namespace: str) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values |= rendered.get("ConfigMap", source["configMapRef"]["name"], namespace)["data"]
        else:
            pytest.fail(f"envFrom {source}: secrets belong in files (*_FILE)")
    for e in container.get("env", []):
        values[e["name"]] = e.get("value")
    return values


def test_known_variables_come_from_the_app():
    known = known_app_env_vars()
    # A settings field, its *_FILE form, and the variables read outside the settings class.
    assert {"NATSQ_VALKEY_SENTINEL_PASSWORD", "NATSQ_VALKEY_SENTINEL_PASSWORD_FILE", "NATSQ_NAMESPACE",
            "NATSQ_BIND", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR", "dramatiq_prom_port"} <= known
    assert "NATSQ_NO_SUCH_SETTING" not in known


def test_app_sets_only_variables_the_app_reads(rendered: Rendered):
    known = known_app_env_vars()
    found = False
    for w, c in app_containers(rendered):
        found = True
        unknown = set(_app_env(rendered, c, _namespaced(w))) - known
        assert not unknown, f"{name_of(w)} sets variables the app does not read: {sorted(unknown)}"
    assert found


def test_app_configuration_points_at_real_things(rendered: Rendered):
    nats = rendered.get("StatefulSet", "nats", "natsq-data")
    valkey = rendered.get("StatefulSet", "valkey", "natsq-data")
    for w, c in app_containers(rendered):
        env = _app_env(rendered, c, _namespaced(w))
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        for name, value in env.items():
            if name.endswith("_FILE") and value:
                assert any(value.startswith(m + "/") for m in mounts), f"{name}={value} is not mounted"
        assert int(env["NATSQ_STREAM_REPLICAS"]) == nats["spec"]["replicas"]
        for url in env["NATSQ_NATS_URL"].split(","):
            host, port = re.fullmatch(r"(?:nats|tls)://([^:/]+):(\d+)", url.strip()).groups()
            service, namespace = host.split(".")[:2]
            svc = rendered.get("Service", service, namespace)
            assert svc and int(port) in [p["port"] for p in svc["spec"]["ports"]], url
        sentinels = env["NATSQ_VALKEY_SENTINELS"].split(",")
        assert len(sentinels) == valkey["spec"]["replicas"]
        for i, sentinel in enumerate(sorted(s.strip() for s in sentinels)):
            assert sentinel == f"valkey-{i}.{valkey['spec']['serviceName']}.natsq-data.svc.cluster.local:26379"
        assert "NATSQ_VALKEY_URL" not in env, "the app must find the primary through Sentinel"
        if w["kind"] != "Job":  # the bootstrap Job declares streams only and holds no Valkey password
            assert env.get("NATSQ_VALKEY_SENTINEL_PASSWORD_FILE"), "Sentinel requires a password (configure.sh)"
        # Every secret file the app is pointed at is a key of the Secret mounted there.
        for volume in pod_spec(w)["volumes"]:
            if "secret" not in volume:
                continue
            mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == volume["name"])
            keys = _secret_keys(rendered, _namespaced(w), volume["secret"]["secretName"])
            if "items" in volume["secret"]:  # only these keys, under these file names
                assert {i["key"] for i in volume["secret"]["items"]} <= keys, name_of(w)
                keys = {i["path"] for i in volume["secret"]["items"]}
            for name, value in env.items():
                if name.endswith("_FILE") and value and value.startswith(mount + "/"):
                    assert value.removeprefix(mount + "/") in keys, f"{name}={value}: no such key in the Secret"
        assert c.get("securityContext", {}).get("readOnlyRootFilesystem") is True
        assert "/tmp" in mounts


def _secret_keys(rendered: Rendered, namespace: str, name: str) -> set[str]:
    secret = rendered.get("Secret", name, namespace)
    if secret is not None:
        return set(secret.get("data", {})) | set(secret.get("stringData", {}))
    certificates = [c for c in rendered.of_kind("Certificate")
                    if _namespaced(c) == namespace and c["spec"]["secretName"] == name]
    if certificates:
        return {"tls.crt", "tls.key", "ca.crt"}  # cert-manager's keys (ca.crt: the CA issuer's)
    external = next(e for e in rendered.of_kind("ExternalSecret") if _namespaced(e) == namespace
                    and e["spec"].get("target", {}).get("name", e["metadata"]["name"]) == name)
    return {d["secretKey"] for d in external["spec"]["data"]}


def test_workers_scale_on_the_stream_the_app_uses(rendered: Rendered):
    namespace = rendered.get("ConfigMap", "natsq-config", "natsq")["data"]["NATSQ_NAMESPACE"]
    for scaler in rendered.of_kind("ScaledObject"):
        for trigger in scaler["spec"]["triggers"]:
            if trigger["type"] == "nats-jetstream":
                assert trigger["metadata"]["stream"] == f"{namespace}-tasks", name_of(scaler)


def test_each_cloud_has_its_own_stream_namespace(all_rendered):
    """Clusters joined into one NATS super-cluster share one JetStream domain: stream names must differ."""
    namespaces = {name: overlay.get("ConfigMap", "natsq-config", "natsq")["data"]["NATSQ_NAMESPACE"]
                  for name, overlay in all_rendered.items() if name.startswith("prod-")}
    assert len(namespaces) >= 3
    assert len(set(namespaces.values())) == len(namespaces), namespaces
    for name, namespace in namespaces.items():
        assert namespace == f"natsq-{name.removeprefix('prod-')}", (name, namespace)


# --- Valkey -------------------------------------------------------------------------------------

def test_valkey_guards_against_split_brain_and_persists(rendered: Rendered):
    valkey = rendered.get("StatefulSet", "valkey", "natsq-data")
    assert valkey["spec"]["replicas"] == 3
    config_name = next(v["configMap"]["name"] for v in pod_spec(valkey)["volumes"] if v["name"] == "config")
    data = rendered.get("ConfigMap", config_name, "natsq-data")["data"]
    assert re.search(r"^min-replicas-to-write [1-9]", data["valkey.conf"], re.M)
    assert re.search(r"^min-replicas-max-lag \d+", data["valkey.conf"], re.M)
    assert re.search(r"^appendonly yes", data["valkey.conf"], re.M)
    # quorum 2 of 3 Sentinels
    assert re.search(r"sentinel monitor \$\{MASTER_NAME\} \$\{primary\} 6379 2$", data["configure.sh"], re.M)
    # Sentinel has its own password; its exporter and probe authenticate with it.
    assert re.search(r'^requirepass "\$\{sentinel_password\}"$', data["configure.sh"], re.M)
    sentinel_exporter = next(c for c in pod_spec(valkey)["containers"] if c["name"] == "sentinel-exporter")
    assert any(e["name"] == "REDIS_PASSWORD" and e["valueFrom"]["secretKeyRef"]["key"] == "sentinel-password"
               for e in sentinel_exporter["env"])
    secret_name = next(v["secret"]["secretName"] for v in pod_spec(valkey)["volumes"] if v["name"] == "password")
    assert "sentinel-password" in _secret_keys(rendered, "natsq-data", secret_name)
    names = {c["name"] for c in pod_spec(valkey)["containers"]}
    assert {"valkey", "sentinel", "exporter"} <= names
    assert valkey["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


# --- secrets, monitoring, GitOps ------------------------------------------------------------------

def _referenced_secrets(rendered: Rendered) -> set[tuple[str, str]]:
    refs = set()
    for w in rendered.workloads():
        ns = _namespaced(w)
        for v in pod_spec(w).get("volumes", []):
            if "secret" in v:
                refs.add((ns, v["secret"]["secretName"]))
        for c in containers(w):
            for e in c.get("env", []):
                if "secretKeyRef" in e.get("valueFrom", {}):
                    refs.add((ns, e["valueFrom"]["secretKeyRef"]["name"]))
    return refs


def test_every_referenced_secret_is_provided(rendered: Rendered):
    provided = {(_namespaced(s), s["metadata"]["name"]) for s in rendered.of_kind("Secret")}
    provided |= {(_namespaced(e), e["spec"].get("target", {}).get("name", e["metadata"]["name"]))
                 for e in rendered.of_kind("ExternalSecret")}
    provided |= {(_namespaced(c), c["spec"]["secretName"]) for c in rendered.of_kind("Certificate")}
    assert _referenced_secrets(rendered) <= provided


# Overlays with Kustomize-generated, publicly known credentials: dev, and ci (dev on a throwaway
# kind cluster, deployed by .ci/kind_deploy.sh and never by Argo CD).
GENERATED_SECRET_OVERLAYS = {"dev", "ci"}
NOT_ARGOCD_OVERLAYS = {"ci"}


def test_only_dev_commits_secret_values(rendered: Rendered):
    if rendered.name in GENERATED_SECRET_OVERLAYS:
        return
    assert rendered.of_kind("Secret") == [], "outside dev, secrets come from Vault (ExternalSecret)"
    # The store is the cluster's (terraform/modules/cluster-addons creates it; tests/terraform checks
    # the name): the overlays only refer to it.
    assert rendered.of_kind("ClusterSecretStore", "SecretStore") == []
    for external in rendered.of_kind("ExternalSecret"):
        assert external["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": CLUSTER_SECRET_STORE}


def test_monitors_are_selected_by_kube_prometheus_stack_and_cover_every_metrics_port(rendered: Rendered):
    monitors = rendered.of_kind("ServiceMonitor", "PodMonitor", "PrometheusRule")
    for monitor in monitors:
        assert monitor["metadata"]["labels"].get("release") == "kube-prometheus-stack", name_of(monitor)
    if not rendered.of_kind("ServiceMonitor", "PodMonitor"):
        return  # overlay without the monitoring component
    scraped = set()
    for sm in rendered.of_kind("ServiceMonitor"):
        for svc in rendered.of_kind("Service"):
            if _namespaced(svc) == _namespaced(sm) and selector_matches(sm["spec"]["selector"], svc["metadata"]["labels"]):
                for ep in sm["spec"]["endpoints"]:
                    port = next(p for p in svc["spec"]["ports"] if p["name"] == ep["port"])
                    for w in rendered.pods_selected(_namespaced(svc), {"matchLabels": svc["spec"]["selector"]}):
                        scraped.add((name_of(w), resolve_port(port["targetPort"], containers(w))))
    for pm in rendered.of_kind("PodMonitor"):
        workloads = rendered.pods_selected(_namespaced(pm), pm["spec"]["selector"])
        assert workloads, name_of(pm)
        for ep in pm["spec"]["podMetricsEndpoints"]:
            for w in workloads:
                number = resolve_port(ep["port"], containers(w))
                assert number is not None, f"{name_of(pm)} port {ep['port']}"
                scraped.add((name_of(w), number))
    expected = {("Deployment/natsq/natsq-gateway", 8000), ("Deployment/natsq/natsq-worker", 9191),
                ("StatefulSet/natsq-data/nats", 7777), ("StatefulSet/natsq-data/valkey", 9121),
                ("StatefulSet/natsq-data/valkey", 9122)}
    assert expected <= scraped


def test_each_overlay_has_a_cluster_entry_point_with_only_its_application(all_rendered):
    """k8s/argocd/<overlay>: what Terraform's root Application (app of apps) points at."""
    from k8s_manifests import ARGOCD_DIR, render

    for name in all_rendered.keys() - NOT_ARGOCD_OVERLAYS:
        objects = render(ARGOCD_DIR / name)
        assert sorted(o["kind"] for o in objects) == ["AppProject", "Application"], name
        app = next(o for o in objects if o["kind"] == "Application")
        assert app["metadata"]["name"] == f"natsq-{name}" and app["metadata"]["namespace"] == "argocd"
        assert app["spec"]["source"]["path"] == f"k8s/overlays/{name}"
        # The Namespaces are objects of the overlay (k8s/base/namespaces): Argo CD must not create them.
        assert "CreateNamespace=true" not in app["spec"].get("syncPolicy", {}).get("syncOptions", [])
        assert "namespace" not in app["spec"]["destination"]


def test_one_argocd_application_per_overlay(argocd_rendered: Rendered, all_rendered):
    apps = argocd_rendered.of_kind("Application")
    paths = sorted(a["spec"]["source"]["path"] for a in apps)
    assert paths == sorted(f"k8s/overlays/{name}" for name in all_rendered.keys() - NOT_ARGOCD_OVERLAYS)
    project = argocd_rendered.of_kind("AppProject")[0]
    allowed = {(g["group"], g["kind"]) for g in project["spec"]["namespaceResourceWhitelist"]}
    allowed |= {(g["group"], g["kind"]) for g in project["spec"]["clusterResourceWhitelist"]}
    for overlay in all_rendered.values():
        for obj in overlay.objects:
            group = obj["apiVersion"].rpartition("/")[0]
            assert (group, obj["kind"]) in allowed, f"AppProject natsq does not allow {name_of(obj)}"
