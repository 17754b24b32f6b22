locals {
  kubeconfig         = module.mks.kubeconfig
  cloud              = "ovh"
  region             = var.region
  api_endpoint       = module.mks.api_endpoint
  kubeconfig_command = "terraform output -raw kubeconfig > ~/.kube/natsq-ovh.yaml && chmod 600 ~/.kube/natsq-ovh.yaml"
}

module "mks" {
  source = "../../modules/ovh-mks"

  service_name       = var.service_name
  name               = var.cluster_name
  region             = var.region
  kubernetes_version = var.kubernetes_version
  vlan_id            = var.vlan_id
  api_allowed_cidrs  = var.api_allowed_cidrs
  node_pools         = var.node_pools
}

module "addons" {
  source = "../../modules/cluster-addons"

  environment   = "ovh"
  cluster_name  = var.cluster_name
  storage_class = "csi-cinder-encrypted"
  storage_class_spec = {
    provisioner = "cinder.csi.openstack.org"
    parameters  = { type = var.volume_type }
  }
  vault                = var.vault
  acme_email           = var.acme_email
  nats_multicloud_conf = module.topology.this_nats_conf
  chart_versions       = var.chart_versions
  app = {
    repo_url        = var.app_repo_url
    target_revision = var.app_revision
    overlay         = coalesce(var.app_overlay, "prod-${local.cloud}")
  }

  depends_on = [module.mks]
}
