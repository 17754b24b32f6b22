output "kubeconfig" {
  description = "Admin kubeconfig of the OVHcloud cluster (used by kubeconfig_command)."
  value       = module.mks.kubeconfig
  sensitive   = true
}
