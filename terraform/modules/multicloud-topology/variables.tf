variable "clusters" {
  description = <<-EOT
    Every Kubernetes cluster of the fleet, keyed by a short cluster name that is
    also the NATS cluster name (lowercase, digits and dashes). One entry per
    cloud region. Addresses are public DNS names or IPs of each cluster's load
    balancers; leave them null until the environment has been applied once.
  EOT
  type = map(object({
    cloud                = string
    region               = string
    nats_gateway_address = optional(string)
    ingress_address      = optional(string)
    weight               = optional(number, 100)
    serving              = optional(bool, true)
    leafnode_hub         = optional(bool, false)
  }))

  validation {
    condition     = length(var.clusters) >= 1
    error_message = "The fleet needs at least one cluster."
  }
  validation {
    condition     = alltrue([for name, _ in var.clusters : can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", name))])
    error_message = "Cluster names must be 3-32 characters of lowercase letters, digits and dashes (they become NATS cluster and DNS names)."
  }
  validation {
    condition     = alltrue([for c in values(var.clusters) : contains(["aws", "hetzner", "ovh"], c.cloud)])
    error_message = "cloud must be one of aws, hetzner, ovh."
  }
  validation {
    condition     = alltrue([for c in values(var.clusters) : c.weight >= 0 && c.weight <= 255 && floor(c.weight) == c.weight])
    error_message = "weight must be an integer between 0 and 255 (Route 53 weighted routing range)."
  }
  validation {
    condition     = length([for c in values(var.clusters) : c if c.leafnode_hub]) <= 1
    error_message = "At most one cluster can be the leaf-node hub."
  }
}

variable "this_cluster" {
  description = "Name of the cluster this configuration is rendered for (a key of clusters); null renders only the fleet-wide outputs."
  type        = string
  default     = null

  validation {
    condition     = var.this_cluster == null || contains(keys(var.clusters), coalesce(var.this_cluster, "-"))
    error_message = "this_cluster must be one of the keys of clusters."
  }
}

variable "mode" {
  description = "How the per-cloud NATS clusters join: \"gateways\" (one super-cluster, one JetStream domain) or \"leafnodes\" (spokes connect to the hub cluster as leaf nodes, one JetStream domain per cluster)."
  type        = string
  default     = "gateways"

  validation {
    condition     = contains(["gateways", "leafnodes"], var.mode)
    error_message = "mode must be \"gateways\" or \"leafnodes\"."
  }
  validation {
    condition     = var.mode == "gateways" || length([for c in values(var.clusters) : c if c.leafnode_hub]) == 1
    error_message = "mode = \"leafnodes\" needs exactly one cluster with leafnode_hub = true."
  }
}

variable "dns_zone" {
  description = "DNS zone that carries the public names (e.g. natsq.example.com), without a trailing dot."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.dns_zone))
    error_message = "dns_zone must be a lowercase DNS name without a trailing dot."
  }
}

variable "api_record_name" {
  description = "Label of the steered API name inside dns_zone (api -> api.<dns_zone>)."
  type        = string
  default     = "api"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.api_record_name))
    error_message = "api_record_name must be one DNS label."
  }
}

variable "gateway_port" {
  description = "NATS gateway port (TCP) exposed by every cluster's gateway load balancer."
  type        = number
  default     = 7222

  validation {
    condition     = var.gateway_port > 1024 && var.gateway_port < 65536
    error_message = "gateway_port must be an unprivileged TCP port."
  }
}

variable "leafnode_port" {
  description = "NATS leaf-node port (TCP) of the hub cluster, used when mode = \"leafnodes\"."
  type        = number
  default     = 7422

  validation {
    condition     = var.leafnode_port > 1024 && var.leafnode_port < 65536
    error_message = "leafnode_port must be an unprivileged TCP port."
  }
}

variable "dns_ttl" {
  description = "TTL in seconds of the steered records; short so that a failed cluster drains quickly."
  type        = number
  default     = 60

  validation {
    condition     = var.dns_ttl >= 5 && var.dns_ttl <= 3600
    error_message = "dns_ttl must be between 5 and 3600 seconds."
  }
}
