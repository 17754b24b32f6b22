output "root_application_name" {
  description = "Name of the root Application (namespace argocd)."
  value       = local.root_name
}

output "root_application" {
  description = "The root Application's fields, as the argocd-apps chart takes them under applications.<name>."
  value       = local.application
}

output "application_name" {
  description = "Name of the Application (in k8s/argocd/<overlay>) that deploys natsq on this cluster."
  value       = local.child_name
}

output "overlay_path" {
  description = "Path of the overlay the natsq Application deploys."
  value       = "k8s/overlays/${var.overlay}"
}

output "joins_fleet" {
  description = "Whether the NATS fleet values are patched into the nats-multicloud ConfigMap."
  value       = local.joins_fleet
}
