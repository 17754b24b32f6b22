# HCLOUD token from TF_VAR_hcloud_token (kept in Vault), never from files.
provider "hcloud" {
  token = var.hcloud_token
}

# k3s writes its kubeconfig on the first control-plane node; the runbook
# fetches it before the second apply stage (docs/runbooks/hetzner.md).
provider "helm" {
  kubernetes = {
    config_path = var.kubeconfig_path
  }
}

provider "kubernetes" {
  config_path = var.kubeconfig_path
}
