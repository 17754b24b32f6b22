variable "name" {
  description = "Cluster name; prefix of every Hetzner Cloud resource and value of the natsq.io/cluster label."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 lowercase letters, digits and dashes."
  }
}

variable "location" {
  description = "Hetzner Cloud location of servers and load balancer (e.g. fsn1, nbg1, hel1)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{3}[0-9]$", var.location))
    error_message = "location must be a Hetzner location code like fsn1."
  }
}

variable "network_zone" {
  description = "Network zone of the location (eu-central for fsn1/nbg1/hel1, us-east for ash, us-west for hil, ap-southeast for sin)."
  type        = string

  validation {
    condition     = contains(["eu-central", "us-east", "us-west", "ap-southeast"], var.network_zone)
    error_message = "network_zone must be a Hetzner network zone."
  }
}

variable "network_cidr" {
  description = "IPv4 range of the private network; nodes get addresses from its first /24 subnet."
  type        = string
  default     = "10.60.0.0/16"

  validation {
    condition     = can(cidrhost(var.network_cidr, 0))
    error_message = "network_cidr must be a CIDR."
  }
}

variable "k3s_version" {
  description = "k3s release installed on every node (INSTALL_K3S_VERSION), e.g. v1.34.1+k3s1."
  type        = string

  validation {
    condition     = can(regex("^v1\\.[0-9]+\\.[0-9]+\\+k3s[0-9]+$", var.k3s_version))
    error_message = "k3s_version must look like v1.34.1+k3s1."
  }
}

variable "k3s_token" {
  description = "Shared secret nodes use to join the cluster (keep it in Vault, pass it as TF_VAR_k3s_token)."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.k3s_token) >= 32
    error_message = "k3s_token must be at least 32 characters."
  }
}

variable "image" {
  description = "Server image for all nodes."
  type        = string
  default     = "ubuntu-24.04"
}

variable "control_plane" {
  description = "Control-plane servers (embedded etcd): count must be 1 or 3; they run no workloads."
  type = object({
    count       = number
    server_type = string
  })

  validation {
    condition     = contains([1, 3], var.control_plane.count)
    error_message = "control_plane.count must be 1 (dev) or 3 (etcd quorum)."
  }
}

variable "node_pools" {
  description = <<-EOT
    Agent node pools. Keys become the `natsq.io/pool` label; `dedicated = true`
    adds a `natsq.io/pool=<key>:NoSchedule` taint (stateful data services).
  EOT
  type = map(object({
    count       = number
    server_type = string
    dedicated   = optional(bool, false)
    labels      = optional(map(string), {})
  }))

  validation {
    condition     = alltrue([for p in values(var.node_pools) : p.count >= 0 && p.count <= 50])
    error_message = "A pool has between 0 and 50 servers."
  }
  validation {
    condition     = sum(concat([0], [for p in values(var.node_pools) : p.count])) <= 140
    error_message = "At most 140 agents (private IPs .100-.239 of the node subnet)."
  }
}

variable "ssh_public_keys" {
  description = "SSH public keys allowed on the servers (break-glass access and kubeconfig retrieval)."
  type        = map(string)

  validation {
    condition     = length(var.ssh_public_keys) > 0 && alltrue([for k in values(var.ssh_public_keys) : can(regex("^(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) ", k))])
    error_message = "Give at least one OpenSSH public key."
  }
}

variable "admin_cidrs" {
  description = "Source CIDRs allowed to reach SSH (22) and the Kubernetes API (6443 on the API load balancer)."
  type        = list(string)

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0" && c != "::/0"])
    error_message = "admin_cidrs must be non-empty CIDRs and not the whole internet."
  }
}

variable "load_balancer_type" {
  description = "Hetzner load balancer type for the Kubernetes API."
  type        = string
  default     = "lb11"

  validation {
    condition     = contains(["lb11", "lb21", "lb31"], var.load_balancer_type)
    error_message = "load_balancer_type must be lb11, lb21 or lb31."
  }
}

variable "labels" {
  description = "Labels added to every Hetzner Cloud resource."
  type        = map(string)
  default     = {}
}
