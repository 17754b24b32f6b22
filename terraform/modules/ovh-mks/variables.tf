variable "service_name" {
  description = "OVHcloud Public Cloud project ID (the provider calls it service_name)."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{32}$", var.service_name))
    error_message = "service_name must be the 32-hex-digit Public Cloud project ID."
  }
}

variable "name" {
  description = "Cluster name; prefix of the private network, gateway and node pools."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 lowercase letters, digits and dashes."
  }
}

variable "region" {
  description = "OVHcloud region of the cluster (e.g. GRA9, or the 3-AZ region EU-WEST-PAR)."
  type        = string

  validation {
    condition     = can(regex("^[A-Z0-9-]{3,20}$", var.region))
    error_message = "region must be an OVHcloud region code in upper case."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of Managed Kubernetes, e.g. \"1.33\"."
  type        = string

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.33."
  }
}

variable "vlan_id" {
  description = "vRack VLAN ID of the private network (unique within the project's vRack)."
  type        = number

  validation {
    condition     = var.vlan_id >= 1 && var.vlan_id <= 4000
    error_message = "vlan_id must be between 1 and 4000."
  }
}

variable "subnet_cidr" {
  description = "IPv4 range of the nodes' private subnet."
  type        = string
  default     = "10.70.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR."
  }
}

variable "gateway_model" {
  description = "Size of the managed gateway giving the private nodes their egress."
  type        = string
  default     = "s"

  validation {
    condition     = contains(["s", "m", "l"], var.gateway_model)
    error_message = "gateway_model must be s, m or l."
  }
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API (API server IP restrictions)."
  type        = list(string)

  validation {
    condition     = length(var.api_allowed_cidrs) > 0 && alltrue([for c in var.api_allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "api_allowed_cidrs must be non-empty CIDRs and not 0.0.0.0/0."
  }
}

variable "node_pools" {
  description = <<-EOT
    Node pools with the cluster autoscaler. Keys become the pool name and the
    `natsq.io/pool` label; `dedicated = true` adds a NoSchedule taint.
    availability_zones pins a pool to zones of a 3-AZ region (empty = the region).
  EOT
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

  validation {
    condition     = alltrue([for p in values(var.node_pools) : p.min_nodes <= p.desired_nodes && p.desired_nodes <= p.max_nodes && p.min_nodes >= 0])
    error_message = "Every pool needs 0 <= min_nodes <= desired_nodes <= max_nodes."
  }
  validation {
    condition     = alltrue([for p in values(var.node_pools) : !p.anti_affinity || p.max_nodes <= 5])
    error_message = "OVHcloud limits anti-affinity pools to 5 nodes."
  }
  validation {
    condition     = alltrue([for k, _ in var.node_pools : can(regex("^[a-z][a-z0-9-]{0,20}$", k))])
    error_message = "Pool keys must be short lowercase names."
  }
}
