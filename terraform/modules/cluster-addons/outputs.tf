output "prometheus_release_name" {
  description = "Helm release name of kube-prometheus-stack: ServiceMonitors, PodMonitors and PrometheusRules need the label release=<this>."
  value       = helm_release.kube_prometheus_stack.name
}

output "namespaces" {
  description = "Namespace of each add-on."
  value = {
    cert_manager     = helm_release.cert_manager.namespace
    monitoring       = helm_release.kube_prometheus_stack.namespace
    loki             = helm_release.loki.namespace
    external_secrets = helm_release.external_secrets.namespace
    keda             = helm_release.keda.namespace
    argocd           = helm_release.argo_cd.namespace
    chaos_mesh       = helm_release.chaos_mesh.namespace
  }
}

output "argocd_application" {
  description = "Argo CD Applications: the root (Terraform's) and the natsq Application it deploys from Git, with the overlay and revision they track."
  value = {
    root     = module.bootstrap.root_application_name
    name     = module.bootstrap.application_name
    path     = module.bootstrap.overlay_path
    revision = var.app.target_revision
  }
}

output "cluster_secret_store" {
  description = "Name of the cluster's Vault ClusterSecretStore, which the natsq ExternalSecrets reference."
  value       = local.secret_store_name
}

output "chart_versions" {
  description = "Chart versions installed."
  value       = var.chart_versions
}
