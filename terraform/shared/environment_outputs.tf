# The three environments expose exactly the same outputs (checked by
# tests/terraform): tooling and docs can treat every cloud alike.

output "cloud" {
  description = "Cloud provider of this environment."
  value       = local.cloud
}

output "cluster_name" {
  description = "Name of the cluster (NATS cluster name, DNS label)."
  value       = var.cluster_name
}

output "region" {
  description = "Region or location of the cluster."
  value       = local.region
}

output "kubernetes_api_endpoint" {
  description = "URL of the Kubernetes API."
  value       = local.api_endpoint
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig for this cluster."
  value       = local.kubeconfig_command
}

output "nats_multicloud_conf" {
  description = "nats-server.conf fragment that joins this cluster to the fleet (also shipped as ConfigMap natsq-nats-multicloud)."
  value       = module.topology.this_nats_conf
}

output "dns_records" {
  description = "DNS records of the whole fleet, for terraform/global/dns or any DNS provider."
  value       = module.topology.dns_records
}

output "cluster_api_fqdn" {
  description = "Public API name of this cluster (the steered name is api_fqdn)."
  value       = module.topology.cluster_api_fqdn[var.cluster_name]
}

output "api_fqdn" {
  description = "Steered public API name of the fleet."
  value       = module.topology.api_fqdn
}

output "argocd_application" {
  description = "Argo CD Application deploying natsq and the overlay it tracks."
  value       = module.addons.argocd_application
}

output "prometheus_release_name" {
  description = "kube-prometheus-stack release name (label release=<this> on ServiceMonitors and rules)."
  value       = module.addons.prometheus_release_name
}

output "kubeconfig" {
  description = "Admin kubeconfig when the cloud hands one out (OVHcloud); null where kubeconfig_command builds it."
  value       = local.kubeconfig
  sensitive   = true
}
