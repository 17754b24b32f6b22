variable "environment" {
  description = "Name of the environment (cloud) this cluster belongs to."
  type        = string

  validation {
    condition     = contains(["aws", "hetzner", "ovh"], var.environment)
    error_message = "environment must be aws, hetzner or ovh."
  }
}

variable "cluster_name" {
  description = "Cluster name; labels metrics/logs (`cluster` external label) and names the Vault auth mount."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 lowercase letters, digits and dashes."
  }
}

variable "storage_class" {
  description = "StorageClass for the persistent volumes of Prometheus, Alertmanager, Grafana and Loki (encrypted class of the cloud)."
  type        = string

  validation {
    condition     = length(var.storage_class) > 0
    error_message = "storage_class must not be empty."
  }
}

variable "storage_class_spec" {
  description = "When set, a StorageClass named storage_class is created with this provisioner and parameters (e.g. EBS gp3 encrypted with the cluster KMS key); null when the cloud's CSI driver already provides it."
  type = object({
    provisioner = string
    parameters  = map(string)
  })
  default = null
}

variable "container_runtime_socket" {
  description = "Path of the containerd socket on the nodes, for Chaos Mesh's daemon (k3s uses /run/k3s/containerd/containerd.sock)."
  type        = string
  default     = "/run/containerd/containerd.sock"

  validation {
    condition     = startswith(var.container_runtime_socket, "/") && endswith(var.container_runtime_socket, ".sock")
    error_message = "container_runtime_socket must be an absolute path to a .sock file."
  }
}

variable "vault" {
  description = "Vault that External Secrets Operator reads from: address, Kubernetes auth mount and role, KV v2 mount."
  type = object({
    address         = string
    auth_mount_path = string
    role            = optional(string, "external-secrets")
    kv_mount        = optional(string, "secret")
    ca_bundle_b64   = optional(string)
  })

  validation {
    condition     = startswith(var.vault.address, "https://")
    error_message = "vault.address must be an https:// URL."
  }
}

variable "acme_email" {
  description = "E-mail address registered with Let's Encrypt for the cluster's ClusterIssuer."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$", var.acme_email))
    error_message = "acme_email must be an e-mail address."
  }
}

variable "ingress_class" {
  description = "IngressClass used by the ACME HTTP-01 solver."
  type        = string
  default     = "nginx"
}

variable "app" {
  description = "Where Argo CD takes natsq from: Git repository, revision, and the overlay (k8s/argocd/<overlay> holds its Application, k8s/overlays/<overlay> the manifests)."
  type = object({
    repo_url        = string
    target_revision = optional(string, "main")
    overlay         = string
  })

  validation {
    condition     = can(regex("^(https://|git@|ssh://)", var.app.repo_url))
    error_message = "app.repo_url must be an https, ssh or scp-style Git URL."
  }
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]*$", var.app.overlay))
    error_message = "app.overlay must be the name of a directory under k8s/overlays/."
  }
}

variable "nats_multicloud_conf" {
  description = "nats-server.conf fragment that joins this cluster to the fleet (output this_nats_conf of the multicloud-topology module), patched into the ConfigMap natsq-nats-multicloud of the overlay through Argo CD; empty for a single cluster."
  type        = string
  default     = ""
}

variable "prometheus_retention" {
  description = "How long Prometheus keeps samples (Prometheus duration)."
  type        = string
  default     = "15d"

  validation {
    condition     = can(regex("^[0-9]+[hdwy]$", var.prometheus_retention))
    error_message = "prometheus_retention must be a duration like 15d."
  }
}

variable "loki_retention_hours" {
  description = "How long Loki keeps logs, in hours."
  type        = number
  default     = 336

  validation {
    condition     = var.loki_retention_hours >= 24
    error_message = "Keep logs at least 24 hours."
  }
}

variable "chart_versions" {
  description = "Pinned Helm chart versions; bump them here (one place for all environments)."
  type = object({
    cert_manager          = optional(string, "v1.19.1")
    kube_prometheus_stack = optional(string, "79.5.0")
    loki                  = optional(string, "6.46.0")
    alloy                 = optional(string, "1.4.0")
    external_secrets      = optional(string, "1.0.0")
    keda                  = optional(string, "2.18.1")
    argo_cd               = optional(string, "9.1.0")
    argocd_apps           = optional(string, "2.0.2")
    chaos_mesh            = optional(string, "2.7.2")
  })
  default = {}

  validation {
    condition     = alltrue([for v in values(var.chart_versions) : can(regex("^v?[0-9]+\\.[0-9]+\\.[0-9]+$", v))])
    error_message = "Chart versions must be exact (x.y.z), never ranges."
  }
}
