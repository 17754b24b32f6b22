# ---- shared by the three environments: each links here (variables_common.tf) -

variable "cluster_name" {
  description = "Name of this cluster; must be a key of fleet (it is the NATS cluster name and the DNS label)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 lowercase letters, digits and dashes."
  }
}

variable "fleet" {
  description = "Every cluster of the multi-cloud fleet (same file for all environments: -var-file=../fleet.tfvars). See modules/multicloud-topology."
  type = map(object({
    cloud                = string
    region               = string
    nats_gateway_address = optional(string)
    ingress_address      = optional(string)
    weight               = optional(number, 100)
    serving              = optional(bool, true)
    leafnode_hub         = optional(bool, false)
  }))
}

variable "nats_mode" {
  description = "How the NATS clusters of the fleet join: gateways (super-cluster) or leafnodes."
  type        = string
  default     = "gateways"

  validation {
    condition     = contains(["gateways", "leafnodes"], var.nats_mode)
    error_message = "nats_mode must be gateways or leafnodes."
  }
}

variable "dns_zone" {
  description = "Public DNS zone of the fleet (e.g. natsq.example.com)."
  type        = string
}

variable "vault" {
  description = "Vault that External Secrets Operator reads from (see docs/multi-cloud.md for the secret layout)."
  type = object({
    address         = string
    auth_mount_path = string
    role            = optional(string, "external-secrets")
    kv_mount        = optional(string, "secret")
    ca_bundle_b64   = optional(string)
  })
}

variable "acme_email" {
  description = "Let's Encrypt account e-mail of the cluster's ClusterIssuer."
  type        = string
}

variable "app_repo_url" {
  description = "Git repository Argo CD deploys natsq from."
  type        = string
}

variable "app_revision" {
  description = "Git revision (branch, tag or commit) Argo CD tracks."
  type        = string
  default     = "main"
}

variable "app_overlay" {
  description = "Directory under k8s/overlays/ Argo CD deploys on this cluster; null = prod-<cloud> (prod-aws, prod-hetzner, prod-ovh)."
  type        = string
  default     = null
}

variable "chart_versions" {
  description = "Overrides of the add-on chart versions pinned in modules/cluster-addons (usually empty)."
  type        = map(string)
  default     = {}
}
