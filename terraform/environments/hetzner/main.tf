locals {
  kubeconfig         = null # k3s writes it on the first server: run kubeconfig_command
  cloud              = "hetzner"
  region             = var.location
  api_endpoint       = module.k3s.api_endpoint
  kubeconfig_command = "ssh root@${module.k3s.control_plane_ipv4[0]} cat /etc/rancher/k3s/k3s.yaml | sed 's/127.0.0.1/${module.k3s.api_load_balancer_ipv4}/' > ${var.kubeconfig_path}"
}

module "k3s" {
  source = "../../modules/hcloud-k3s"

  name            = var.cluster_name
  location        = var.location
  network_zone    = var.network_zone
  k3s_version     = var.k3s_version
  k3s_token       = var.k3s_token
  control_plane   = var.control_plane
  node_pools      = var.node_pools
  ssh_public_keys = var.ssh_public_keys
  admin_cidrs     = var.admin_cidrs
  labels          = { "natsq.io/environment" = "hetzner" }
}

# ---- stage 2 (needs the kubeconfig): Hetzner integrations -------------------

resource "kubernetes_secret_v1" "hcloud" {
  metadata {
    name      = "hcloud"
    namespace = "kube-system"
  }
  data = {
    token   = var.hcloud_token
    network = module.k3s.network_id
  }
}

resource "kubernetes_secret_v1" "volume_luks" {
  metadata {
    name      = "hcloud-volume-luks"
    namespace = "kube-system"
  }
  data = {
    encryption-passphrase = var.volume_encryption_passphrase
  }
}

resource "helm_release" "hcloud_ccm" {
  name       = "hcloud-ccm"
  repository = "https://charts.hetzner.cloud"
  chart      = "hcloud-cloud-controller-manager"
  version    = var.hcloud_chart_versions.ccm
  namespace  = "kube-system"
  atomic     = true

  values = [yamlencode({
    networking = { enabled = true, clusterCIDR = "10.42.0.0/16" }
  })]

  depends_on = [kubernetes_secret_v1.hcloud]
}

resource "helm_release" "hcloud_csi" {
  name       = "hcloud-csi"
  repository = "https://charts.hetzner.cloud"
  chart      = "hcloud-csi"
  version    = var.hcloud_chart_versions.csi
  namespace  = "kube-system"
  atomic     = true

  # Volumes are LUKS-encrypted on the node with the passphrase above.
  values = [yamlencode({
    storageClasses = [{
      name                = "hcloud-volumes-encrypted"
      defaultStorageClass = true
      reclaimPolicy       = "Retain"
      extraParameters = {
        "csi.storage.k8s.io/node-publish-secret-name"      = kubernetes_secret_v1.volume_luks.metadata[0].name
        "csi.storage.k8s.io/node-publish-secret-namespace" = "kube-system"
      }
    }]
  })]

  depends_on = [helm_release.hcloud_ccm]
}

module "addons" {
  source = "../../modules/cluster-addons"

  environment              = "hetzner"
  cluster_name             = var.cluster_name
  storage_class            = "hcloud-volumes-encrypted"
  container_runtime_socket = "/run/k3s/containerd/containerd.sock"
  ingress_class            = "traefik"
  vault                    = var.vault
  acme_email               = var.acme_email
  nats_multicloud_conf     = module.topology.this_nats_conf
  chart_versions           = var.chart_versions
  app = {
    repo_url        = var.app_repo_url
    target_revision = var.app_revision
    overlay         = coalesce(var.app_overlay, "prod-${local.cloud}")
  }

  depends_on = [helm_release.hcloud_csi]
}
