output "network_id" {
  description = "ID of the private network (the cloud controller manager routes and attaches load balancers in it)."
  value       = hcloud_network.this.id
}

output "api_endpoint" {
  description = "Public Kubernetes API URL (through the API load balancer)."
  value       = "https://${hcloud_load_balancer.api.ipv4}:6443"
}

output "api_load_balancer_ipv4" {
  description = "Public IPv4 of the API load balancer."
  value       = hcloud_load_balancer.api.ipv4
}

output "control_plane_ipv4" {
  description = "Public IPv4 of the control-plane servers (SSH to fetch /etc/rancher/k3s/k3s.yaml)."
  value       = hcloud_server.control_plane[*].ipv4_address
}

output "node_names" {
  description = "Names of all servers by role."
  value = {
    control_plane = hcloud_server.control_plane[*].name
    agents        = [for s in hcloud_server.agent : s.name]
  }
}
