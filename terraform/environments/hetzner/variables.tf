variable "hcloud_token" {
  description = "Hetzner Cloud API token (read/write) for this project; also handed to the CCM and CSI driver. Pass as TF_VAR_hcloud_token."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.hcloud_token) == 64
    error_message = "A Hetzner Cloud API token has 64 characters."
  }
}

variable "k3s_token" {
  description = "k3s join token. Pass as TF_VAR_k3s_token (generate once: openssl rand -hex 32, keep in Vault)."
  type        = string
  sensitive   = true
}

variable "volume_encryption_passphrase" {
  description = "LUKS passphrase the hcloud CSI driver encrypts volumes with. Pass as TF_VAR_volume_encryption_passphrase (keep in Vault)."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.volume_encryption_passphrase) >= 32
    error_message = "Use at least 32 characters."
  }
}

variable "location" {
  description = "Hetzner location (fsn1, nbg1, hel1, ash, hil, sin)."
  type        = string
}

variable "network_zone" {
  description = "Hetzner network zone matching location."
  type        = string
}

variable "k3s_version" {
  description = "k3s release on all nodes."
  type        = string
  default     = "v1.34.1+k3s1"
}

variable "kubeconfig_path" {
  description = "Path of the kubeconfig fetched from the first control-plane node (stage 2 of the runbook)."
  type        = string
  default     = "~/.kube/natsq-hetzner.yaml"
}

variable "ssh_public_keys" {
  description = "SSH public keys for the servers, by owner."
  type        = map(string)
}

variable "admin_cidrs" {
  description = "CIDRs allowed to SSH to the servers."
  type        = list(string)
}

variable "control_plane" {
  description = "Control-plane servers (1 or 3)."
  type = object({
    count       = number
    server_type = string
  })
  default = {
    count       = 3
    server_type = "cpx21"
  }
}

variable "node_pools" {
  description = "Agent pools: `data` is dedicated (tainted) to NATS and Valkey, `workers` runs the rest."
  type = map(object({
    count       = number
    server_type = string
    dedicated   = optional(bool, false)
    labels      = optional(map(string), {})
  }))
  default = {
    data    = { count = 3, server_type = "cpx31", dedicated = true }
    workers = { count = 3, server_type = "cpx41" }
  }
}

variable "hcloud_chart_versions" {
  description = "Pinned chart versions of the Hetzner cloud controller manager and CSI driver."
  type = object({
    ccm = string
    csi = string
  })
  default = {
    ccm = "1.27.0"
    csi = "2.18.0"
  }
}
