output "cluster_names" {
  description = "Names of all clusters in the fleet, sorted."
  value       = local.names
}

output "api_fqdn" {
  description = "The steered public API name (weighted across serving clusters)."
  value       = local.api_fqdn
}

output "cluster_api_fqdn" {
  description = "Per-cluster API name; clients polling GET /task/<id> stay on the cluster that accepted the task."
  value       = local.cluster_api
}

output "gateway_fqdn" {
  description = "Per-cluster DNS name of the NATS gateway load balancer."
  value       = local.gateway_fqdn
}

output "nats_gateways" {
  description = "Structured NATS gateway block per cluster (name, port, advertise, remote gateways)."
  value       = local.gateway
}

output "nats_conf" {
  description = "nats-server.conf fragment per cluster for the selected mode (gateway block, or leafnodes/jetstream-domain blocks)."
  value       = local.nats_conf
}

output "this_nats_conf" {
  description = "nats-server.conf fragment for this_cluster (empty string when this_cluster is null)."
  value       = var.this_cluster == null ? "" : local.nats_conf[var.this_cluster]
}

output "dns_records" {
  description = "DNS records to create: per-cluster names (plain) and the steered API name (weighted, health-checked)."
  value       = concat(local.cluster_records, local.steered_records)
}

output "serving_weight" {
  description = "Sum of the weights of the serving clusters; 0 means the steered name resolves to nothing healthy."
  value       = local.serving_weight
}
