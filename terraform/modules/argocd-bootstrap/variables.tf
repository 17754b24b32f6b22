variable "repo_url" {
  description = "Git repository Argo CD deploys natsq from (k8s/argocd/<overlay> and k8s/overlays/<overlay>)."
  type        = string

  validation {
    condition     = can(regex("^(https://|git@|ssh://)", var.repo_url))
    error_message = "repo_url must be an https, ssh or scp-style Git URL."
  }
}

variable "target_revision" {
  description = "Git revision (branch, tag or commit) the root and the natsq Application track."
  type        = string
  default     = "main"
}

variable "overlay" {
  description = "Overlay this cluster runs: the root Application points at k8s/argocd/<overlay>, whose one Application deploys k8s/overlays/<overlay>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]*$", var.overlay))
    error_message = "overlay must be the name of a directory under k8s/overlays/."
  }
}

variable "nats_cluster_name" {
  description = "Fleet key of this cluster (multicloud-topology): the NATS cluster and gateway name, and the prefix of the NATS server names."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.nats_cluster_name))
    error_message = "nats_cluster_name must be 3-32 lowercase letters, digits and dashes."
  }
}

variable "nats_multicloud_conf" {
  description = "This cluster's NATS gateway/leaf-node configuration (multicloud-topology output this_nats_conf); empty leaves the nats-multicloud component's defaults (joins no fleet)."
  type        = string
  default     = ""
}
