locals {
  root_name  = "natsq-root"
  child_name = "natsq-${var.overlay}"

  # What the nats-multicloud component's ConfigMap receives (k8s/components/nats-multicloud). Left
  # out for a single cluster, so its NATS keeps the base's cluster and server names.
  joins_fleet = trimspace(var.nats_multicloud_conf) != ""
  multicloud_patch = [
    { op = "replace", path = "/data/multicloud.conf", value = var.nats_multicloud_conf },
    { op = "replace", path = "/data/cluster-name", value = var.nats_cluster_name },
    { op = "replace", path = "/data/server-name-prefix", value = "${var.nats_cluster_name}-" },
  ]

  # Patches Argo CD applies (as kustomize patches) to the child Application it renders from
  # k8s/argocd/<overlay>: the repository and revision of this cluster, and the cluster's NATS
  # fleet values as a kustomize patch of the overlay's ConfigMap natsq-nats-multicloud.
  child_patch = concat(
    [
      { op = "replace", path = "/spec/source/repoURL", value = var.repo_url },
      { op = "replace", path = "/spec/source/targetRevision", value = var.target_revision },
    ],
    local.joins_fleet ? [{
      op   = "add"
      path = "/spec/source/kustomize"
      value = {
        patches = [{
          target = { kind = "ConfigMap", name = "natsq-nats-multicloud" }
          patch  = yamlencode(local.multicloud_patch)
        }]
      }
    }] : [],
  )

  # The root Application (app of apps). It owns only the AppProject and the one Application in
  # k8s/argocd/<overlay>; the natsq Namespaces and everything in them belong to that Application.
  # No finalizer: deleting the root (e.g. terraform destroy of the add-ons) leaves natsq running.
  application = {
    namespace = "argocd"
    project   = "default"
    source = {
      repoURL        = var.repo_url
      targetRevision = var.target_revision
      path           = "k8s/argocd/${var.overlay}"
      kustomize = {
        patches = [
          {
            target = { kind = "Application", name = local.child_name }
            patch  = yamlencode(local.child_patch)
          },
          {
            target = { kind = "AppProject", name = "natsq" }
            patch  = yamlencode([{ op = "replace", path = "/spec/sourceRepos", value = [var.repo_url] }])
          },
        ]
      }
    }
    destination = {
      server    = "https://kubernetes.default.svc"
      namespace = "argocd"
    }
    syncPolicy = {
      automated   = { prune = true, selfHeal = true }
      syncOptions = ["ServerSideApply=true"]
    }
  }
}
