variable "region" {
  description = "AWS region of this cluster (e.g. eu-central-1)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region code."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC (/20 or larger)."
  type        = string
  default     = "10.50.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per zone (saves ~2x NAT cost, loses zone independence of egress)."
  type        = bool
  default     = false
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.34"
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the public EKS API endpoint (empty = private endpoint only)."
  type        = list(string)
}

variable "admin_principal_arns" {
  description = "IAM roles/users that get cluster-admin (EKS access entries)."
  type        = list(string)
}

variable "node_groups" {
  description = "Managed node groups; `data` is dedicated (tainted) to NATS and Valkey, `workers` runs gateway, workers and add-ons."
  type = map(object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 50)
    capacity_type  = optional(string, "ON_DEMAND")
    dedicated      = optional(bool, false)
    labels         = optional(map(string), {})
  }))
  default = {
    data = {
      instance_types = ["m7i.large"]
      min_size       = 3
      max_size       = 6
      desired_size   = 3
      disk_size_gib  = 50
      dedicated      = true
    }
    workers = {
      instance_types = ["c7i.xlarge", "c6i.xlarge"]
      min_size       = 3
      max_size       = 20
      desired_size   = 3
    }
  }
}

variable "cluster_autoscaler_chart_version" {
  description = "Pinned version of the cluster-autoscaler Helm chart."
  type        = string
  default     = "9.52.1"
}
