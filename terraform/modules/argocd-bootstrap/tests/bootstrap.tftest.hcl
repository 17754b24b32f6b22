# Offline tests: this module has no providers, so `terraform test` runs it
# for real (command = apply creates nothing).

variables {
  repo_url          = "https://git.example.com/natsq.git"
  target_revision   = "v1.2.3"
  overlay           = "prod-aws"
  nats_cluster_name = "aws-euc1"
}

run "root_points_at_the_overlays_entry_point" {
  command = apply

  assert {
    condition     = output.root_application.source.path == "k8s/argocd/prod-aws" && output.application_name == "natsq-prod-aws"
    error_message = "the root must point at k8s/argocd/<overlay>, which holds natsq-<overlay>"
  }
  assert {
    condition     = !contains(output.root_application.syncPolicy.syncOptions, "CreateNamespace=true")
    error_message = "the natsq Namespaces belong to k8s/base, never to Argo CD's CreateNamespace"
  }
  assert {
    condition     = output.root_application.destination.namespace == "argocd" && output.root_application.project == "default"
    error_message = "the root manages only Argo CD objects"
  }
  assert {
    condition     = strcontains(output.root_application.source.kustomize.patches[0].patch, "https://git.example.com/natsq.git") && strcontains(output.root_application.source.kustomize.patches[0].patch, "v1.2.3")
    error_message = "the child Application must track this cluster's repository and revision"
  }
}

run "single_cluster_keeps_the_component_defaults" {
  command = apply

  assert {
    condition     = !output.joins_fleet && !strcontains(output.root_application.source.kustomize.patches[0].patch, "natsq-nats-multicloud")
    error_message = "without a fleet configuration the ConfigMap must not be patched"
  }
}

run "fleet_member_gets_its_nats_values" {
  command = apply

  variables {
    nats_multicloud_conf = "gateway {\n  name: \"aws-euc1\"\n}\n"
  }

  assert {
    condition     = output.joins_fleet
    error_message = "a fleet configuration must be patched in"
  }
  assert {
    condition = alltrue([for s in ["natsq-nats-multicloud", "/data/multicloud.conf", "/data/cluster-name", "aws-euc1-"] :
    strcontains(output.root_application.source.kustomize.patches[0].patch, s)])
    error_message = "the ConfigMap patch must carry multicloud.conf, the cluster name and the server-name prefix"
  }
}

run "rejects_bad_overlay" {
  command = plan

  variables {
    overlay = "../prod"
  }

  expect_failures = [var.overlay]
}
