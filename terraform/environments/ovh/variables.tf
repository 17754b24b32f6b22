variable "service_name" {
  description = "OVHcloud Public Cloud project ID."
  type        = string
}

variable "region" {
  description = "OVHcloud region (e.g. GRA9, or EU-WEST-PAR for three availability zones)."
  type        = string
}

variable "kubernetes_version" {
  description = "Managed Kubernetes version."
  type        = string
  default     = "1.33"
}

variable "vlan_id" {
  description = "vRack VLAN ID of the private network."
  type        = number
  default     = 70
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API."
  type        = list(string)
}

variable "volume_type" {
  description = "Block Storage volume type of the default StorageClass (a -luks type is encrypted at rest with an OVHcloud-managed key)."
  type        = string
  default     = "high-speed-gen2-luks"

  validation {
    condition     = endswith(var.volume_type, "-luks")
    error_message = "Use an encrypted (-luks) volume type."
  }
}

variable "node_pools" {
  description = "Autoscaling node pools: `data` is dedicated (tainted) to NATS and Valkey, `workers` runs the rest."
  type = map(object({
    flavor_name        = string
    min_nodes          = number
    max_nodes          = number
    desired_nodes      = number
    autoscale          = optional(bool, true)
    anti_affinity      = optional(bool, false)
    dedicated          = optional(bool, false)
    monthly_billed     = optional(bool, false)
    availability_zones = optional(list(string), [])
    labels             = optional(map(string), {})
  }))
  default = {
    data = {
      flavor_name   = "b3-16"
      min_nodes     = 3
      max_nodes     = 5
      desired_nodes = 3
      anti_affinity = true
      dedicated     = true
    }
    workers = {
      flavor_name   = "c3-8"
      min_nodes     = 3
      max_nodes     = 20
      desired_nodes = 3
    }
  }
}
