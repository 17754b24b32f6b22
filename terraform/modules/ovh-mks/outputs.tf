output "cluster_id" {
  description = "Managed Kubernetes cluster ID."
  value       = ovh_cloud_project_kube.this.id
}

output "api_endpoint" {
  description = "Kubernetes API URL."
  value       = ovh_cloud_project_kube.this.kubeconfig_attributes[0].host
}

output "kubeconfig_attributes" {
  description = "Host and credentials for the helm/kubernetes providers."
  value = {
    host                   = ovh_cloud_project_kube.this.kubeconfig_attributes[0].host
    cluster_ca_certificate = ovh_cloud_project_kube.this.kubeconfig_attributes[0].cluster_ca_certificate
    client_certificate     = ovh_cloud_project_kube.this.kubeconfig_attributes[0].client_certificate
    client_key             = ovh_cloud_project_kube.this.kubeconfig_attributes[0].client_key
  }
  sensitive = true
}

output "kubeconfig" {
  description = "Admin kubeconfig of the cluster."
  value       = ovh_cloud_project_kube.this.kubeconfig
  sensitive   = true
}

output "private_network_id" {
  description = "OpenStack ID of the private network (for load balancers in it)."
  value       = tolist(ovh_cloud_project_network_private.this.regions_attributes)[0].openstackid
}

output "node_pool_names" {
  description = "Node pool names."
  value       = [for p in ovh_cloud_project_kube_nodepool.this : p.name]
}
