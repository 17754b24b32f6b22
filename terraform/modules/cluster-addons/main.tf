locals {
  repositories = {
    jetstack             = "https://charts.jetstack.io"
    prometheus_community = "https://prometheus-community.github.io/helm-charts"
    # The Loki chart moved to the community repository in March 2026.
    grafana_community = "https://grafana-community.github.io/helm-charts"
    grafana           = "https://grafana.github.io/helm-charts"
    external_secrets  = "https://charts.external-secrets.io"
    kedacore          = "https://kedacore.github.io/charts"
    argo              = "https://argoproj.github.io/argo-helm"
    chaos_mesh        = "https://charts.chaos-mesh.org"
  }

  # The helm_release names double as Kubernetes names other teams rely on:
  # ServiceMonitors/PrometheusRules must carry `release: kube-prometheus-stack`.
  prometheus_release = "kube-prometheus-stack"
  common_labels      = { cluster = var.cluster_name, environment = var.environment }

  # The one installation of natsq's monitoring stack: kube-prometheus-stack, Loki and Alloy in the
  # namespace `monitoring` (created by the natsq-platform chart with Pod Security `privileged`,
  # which node-exporter needs), with the values files of grafana/ and loki/ and the one Alloy
  # pipeline loki/config.alloy. The releases below add only what differs per cluster.
  monitoring_namespace = "monitoring"
  repo_root            = "${path.module}/../../.."
  monitoring_values = {
    kube_prometheus_stack = file("${local.repo_root}/grafana/kube-prometheus-stack-values.yaml")
    loki                  = file("${local.repo_root}/loki/values.yaml")
    alloy                 = file("${local.repo_root}/loki/alloy-values.yaml")
    alloy_config          = file("${local.repo_root}/loki/config.alloy")
  }
  # k8s/components/external-secrets and nats-multicloud reference this name.
  secret_store_name = "vault-natsq"
}

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = local.repositories.jetstack
  chart            = "cert-manager"
  version          = var.chart_versions.cert_manager
  namespace        = "cert-manager"
  create_namespace = true
  atomic           = true
  timeout          = 600

  values = [yamlencode({
    crds       = { enabled = true }
    prometheus = { servicemonitor = { enabled = false } }
  })]
}

resource "helm_release" "kube_prometheus_stack" {
  name       = local.prometheus_release
  repository = local.repositories.prometheus_community
  chart      = "kube-prometheus-stack"
  version    = var.chart_versions.kube_prometheus_stack
  namespace  = local.monitoring_namespace
  atomic     = true
  timeout    = 900

  values = [local.monitoring_values.kube_prometheus_stack, yamlencode({
    prometheus = {
      prometheusSpec = {
        retention      = var.prometheus_retention
        externalLabels = local.common_labels
        storageSpec = {
          volumeClaimTemplate = {
            spec = {
              storageClassName = var.storage_class
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = "50Gi" } }
            }
          }
        }
      }
    }
    alertmanager = {
      alertmanagerSpec = {
        storage = {
          volumeClaimTemplate = {
            spec = {
              storageClassName = var.storage_class
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = "5Gi" } }
            }
          }
        }
      }
    }
    grafana = {
      admin = { existingSecret = "grafana-admin", userKey = "admin-user", passwordKey = "admin-password" }
      persistence = {
        enabled          = true
        storageClassName = var.storage_class
        size             = "5Gi"
      }
    }
  })]

  # The grafana-admin Secret comes from Vault through the platform release.
  depends_on = [helm_release.platform]
}

resource "helm_release" "loki" {
  name       = "loki"
  repository = local.repositories.grafana_community
  chart      = "loki"
  version    = var.chart_versions.loki
  namespace  = local.monitoring_namespace
  atomic     = true
  timeout    = 900

  # Monolithic (single binary) with a filesystem store (loki/values.yaml): the same on every
  # cloud, no object storage credentials needed.
  values = [local.monitoring_values.loki, yamlencode({
    loki = {
      limits_config = {
        retention_period   = "${var.loki_retention_hours}h"
        max_query_lookback = "${var.loki_retention_hours}h"
      }
    }
    singleBinary = {
      persistence = { enabled = true, size = "50Gi", storageClass = var.storage_class }
    }
  })]

  depends_on = [helm_release.platform]
}

resource "helm_release" "alloy" {
  name       = "alloy"
  repository = local.repositories.grafana
  chart      = "alloy"
  version    = var.chart_versions.alloy
  namespace  = local.monitoring_namespace
  atomic     = true
  timeout    = 600

  # loki/config.alloy keeps task_id as structured metadata (the dashboard's task_id filter).
  values = [local.monitoring_values.alloy, yamlencode({
    alloy = { configMap = { content = local.monitoring_values.alloy_config } }
  })]

  depends_on = [helm_release.loki]
}

resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = local.repositories.external_secrets
  chart            = "external-secrets"
  version          = var.chart_versions.external_secrets
  namespace        = "external-secrets"
  create_namespace = true
  atomic           = true
  timeout          = 600

  values = [yamlencode({ installCRDs = true })]
}

resource "helm_release" "keda" {
  name             = "keda"
  repository       = local.repositories.kedacore
  chart            = "keda"
  version          = var.chart_versions.keda
  namespace        = "keda"
  create_namespace = true
  atomic           = true
  timeout          = 600
}

resource "helm_release" "argo_cd" {
  name             = "argo-cd"
  repository       = local.repositories.argo
  chart            = "argo-cd"
  version          = var.chart_versions.argo_cd
  namespace        = "argocd"
  create_namespace = true
  atomic           = true
  timeout          = 900

  values = [yamlencode({
    configs = { params = { "server.insecure" = false } }
    dex     = { enabled = false }
  })]
}

resource "helm_release" "chaos_mesh" {
  name             = "chaos-mesh"
  repository       = local.repositories.chaos_mesh
  chart            = "chaos-mesh"
  version          = var.chart_versions.chaos_mesh
  namespace        = "chaos-mesh"
  create_namespace = true
  atomic           = true
  timeout          = 600

  values = [yamlencode({
    chaosDaemon = { runtime = "containerd", socketPath = var.container_runtime_socket }
    dashboard   = { securityMode = true }
    # Experiments only in namespaces annotated chaos-mesh.org/inject=enabled.
    controllerManager = { enableFilterNamespace = true }
  })]
}

# Cluster-scoped glue that needs the CRDs above: the cluster's one Vault
# ClusterSecretStore (vault-natsq, used by Grafana's admin secret here and by
# the natsq ExternalSecrets in k8s/), the internal CA ClusterIssuer natsq-ca (k8s/components/tls), the ACME ClusterIssuer and the
# StorageClass. The release lives in its own namespace: the natsq namespaces
# (natsq, natsq-data, natsq-monitoring) are objects of k8s/base, deployed by
# Argo CD, and Terraform creates nothing in them.
resource "helm_release" "platform" {
  name             = "natsq-platform"
  chart            = "${path.module}/charts/natsq-platform"
  namespace        = "natsq-platform"
  create_namespace = true
  atomic           = true
  timeout          = 300

  values = [yamlencode({
    clusterName = var.cluster_name
    secretStore = { name = local.secret_store_name }
    vault = {
      server        = var.vault.address
      authMountPath = var.vault.auth_mount_path
      role          = var.vault.role
      kvMount       = var.vault.kv_mount
      caBundle      = var.vault.ca_bundle_b64
    }
    acme = {
      email        = var.acme_email
      ingressClass = var.ingress_class
    }
    storageClass = var.storage_class_spec == null ? null : {
      name        = var.storage_class
      provisioner = var.storage_class_spec.provisioner
      parameters  = var.storage_class_spec.parameters
    }
  })]

  depends_on = [helm_release.cert_manager, helm_release.external_secrets]
}

# Argo CD's root Application (app of apps) for natsq: it deploys
# k8s/argocd/<overlay> from Git (the AppProject and the one Application of this
# cluster's overlay), patching in this cluster's repository, revision and NATS
# fleet values. Git owns the natsq Application; Terraform owns only the root.
module "bootstrap" {
  source = "../argocd-bootstrap"

  repo_url             = var.app.repo_url
  target_revision      = var.app.target_revision
  overlay              = var.app.overlay
  nats_cluster_name    = var.cluster_name
  nats_multicloud_conf = var.nats_multicloud_conf
}

resource "helm_release" "app" {
  name       = "natsq-apps"
  repository = local.repositories.argo
  chart      = "argocd-apps"
  version    = var.chart_versions.argocd_apps
  namespace  = "argocd"
  atomic     = true
  timeout    = 300

  values = [yamlencode({
    applications = { (module.bootstrap.root_application_name) = module.bootstrap.root_application }
  })]

  depends_on = [helm_release.argo_cd, helm_release.platform, helm_release.kube_prometheus_stack, helm_release.keda]
}
