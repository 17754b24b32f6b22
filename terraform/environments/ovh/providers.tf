# OVH API credentials from OVH_ENDPOINT, OVH_APPLICATION_KEY,
# OVH_APPLICATION_SECRET, OVH_CONSUMER_KEY (or OVH_CLIENT_ID/SECRET): never in code.
provider "ovh" {}

provider "helm" {
  kubernetes = {
    host                   = module.mks.kubeconfig_attributes.host
    cluster_ca_certificate = base64decode(module.mks.kubeconfig_attributes.cluster_ca_certificate)
    client_certificate     = base64decode(module.mks.kubeconfig_attributes.client_certificate)
    client_key             = base64decode(module.mks.kubeconfig_attributes.client_key)
  }
}
