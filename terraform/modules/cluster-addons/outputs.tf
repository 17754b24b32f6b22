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
  description = "Argo CD Application that deploys natsq, and the overlay it tracks."
  value = {
    name     = "natsq"
    path     = "k8s/overlays/${var.app.overlay}"
    revision = var.app.target_revision
  }
}

output "chart_versions" {
  description = "Chart versions installed."
  value       = var.chart_versions
}
