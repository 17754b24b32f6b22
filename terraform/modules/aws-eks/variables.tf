variable "name" {
  description = "EKS cluster name (also the prefix of IAM roles, keys and log groups)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be 3-40 lowercase letters, digits and dashes."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and the node groups, e.g. \"1.34\"."
  type        = string

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.34."
  }
}

variable "vpc_id" {
  description = "VPC that hosts the cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (one per availability zone) for the control-plane ENIs and the nodes."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 3
    error_message = "Spread the cluster over at least three availability zones."
  }
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint; an empty list turns the public endpoint off (then reach the API from inside the VPC)."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "Every entry must be a CIDR, and 0.0.0.0/0 is not allowed."
  }
}

variable "admin_principal_arns" {
  description = "IAM role/user ARNs granted cluster-admin through EKS access entries (the cluster creator gets nothing implicitly)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/", a))])
    error_message = "admin_principal_arns must be IAM role or user ARNs."
  }
}

variable "logs_kms_key_arn" {
  description = "KMS key ARN for the control-plane CloudWatch log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the control-plane logs, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value."
  }
}

variable "node_groups" {
  description = <<-EOT
    Managed node groups. Keys become the pool name and the `natsq.io/pool`
    label. Pools with `dedicated = true` get a `natsq.io/pool=<key>:NoSchedule`
    taint so only workloads that tolerate it (NATS, Valkey) land there.
  EOT
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

  validation {
    condition     = alltrue([for g in values(var.node_groups) : g.min_size <= g.desired_size && g.desired_size <= g.max_size && g.min_size >= 0])
    error_message = "Every node group needs 0 <= min_size <= desired_size <= max_size."
  }
  validation {
    condition     = alltrue([for g in values(var.node_groups) : contains(["ON_DEMAND", "SPOT"], g.capacity_type)])
    error_message = "capacity_type must be ON_DEMAND or SPOT."
  }
  validation {
    condition     = alltrue([for g in values(var.node_groups) : g.disk_size_gib >= 20 && g.disk_size_gib <= 16384])
    error_message = "disk_size_gib must be between 20 and 16384."
  }
  validation {
    condition     = alltrue([for k, _ in var.node_groups : can(regex("^[a-z][a-z0-9-]{0,20}$", k))])
    error_message = "Node group keys must be short lowercase names."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
