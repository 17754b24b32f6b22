locals {
  labels      = merge(var.labels, { "natsq.io/cluster" = var.name })
  node_subnet = cidrsubnet(var.network_cidr, 8, 0)

  control_plane_ips = [for i in range(var.control_plane.count) : cidrhost(local.node_subnet, 10 + i)]
  api_lb_ip         = cidrhost(local.node_subnet, 2)

  # One entry per agent server: pool key, index and a fixed private IP.
  agents = merge([
    for pool_index, pool in sort(keys(var.node_pools)) : {
      for i in range(var.node_pools[pool].count) : "${pool}-${i}" => {
        pool  = pool
        index = i
        spec  = var.node_pools[pool]
        private_ip = cidrhost(local.node_subnet, 100 + sum(concat([0], [
          for p in slice(sort(keys(var.node_pools)), 0, pool_index) : var.node_pools[p].count
        ])) + i)
      }
    }
  ]...)
}

resource "hcloud_network" "this" {
  name     = var.name
  ip_range = var.network_cidr
  labels   = local.labels
}

resource "hcloud_network_subnet" "nodes" {
  network_id   = hcloud_network.this.id
  type         = "cloud"
  network_zone = var.network_zone
  ip_range     = local.node_subnet
}

resource "hcloud_ssh_key" "this" {
  for_each   = var.ssh_public_keys
  name       = "${var.name}-${each.key}"
  public_key = each.value
  labels     = local.labels
}

# Hetzner firewalls filter the public interfaces only; node-to-node traffic
# stays on the private network. Nothing but SSH and ICMP is open publicly;
# the API is reached through the load balancer, ingress through the
# load balancers the cloud controller manager creates.
resource "hcloud_firewall" "nodes" {
  name   = "${var.name}-nodes"
  labels = local.labels

  rule {
    description = "SSH from admins"
    direction   = "in"
    protocol    = "tcp"
    port        = "22"
    source_ips  = var.admin_cidrs
  }

  rule {
    description = "ICMP"
    direction   = "in"
    protocol    = "icmp"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }
}

resource "hcloud_placement_group" "control_plane" {
  name   = "${var.name}-control-plane"
  type   = "spread"
  labels = local.labels
}

resource "hcloud_placement_group" "pool" {
  for_each = var.node_pools
  name     = "${var.name}-${each.key}"
  type     = "spread"
  labels   = local.labels
}

resource "hcloud_server" "control_plane" {
  count              = var.control_plane.count
  name               = "${var.name}-cp-${count.index}"
  server_type        = var.control_plane.server_type
  image              = var.image
  location           = var.location
  ssh_keys           = [for k in hcloud_ssh_key.this : k.id]
  firewall_ids       = [hcloud_firewall.nodes.id]
  placement_group_id = hcloud_placement_group.control_plane.id
  labels             = merge(local.labels, { "natsq.io/role" = "control-plane" })

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    role        = "server"
    k3s_version = var.k3s_version
    k3s_token   = var.k3s_token
    private_ip  = local.control_plane_ips[count.index]
    join_url    = count.index == 0 ? "" : "https://${local.control_plane_ips[0]}:6443"
    tls_sans    = [local.api_lb_ip, hcloud_load_balancer.api.ipv4]
    node_labels = {}
    node_taints = ["node-role.kubernetes.io/control-plane=true:NoSchedule"]
  })

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }

  network {
    network_id = hcloud_network.this.id
    ip         = local.control_plane_ips[count.index]
  }

  lifecycle {
    # A changed cloud-init would rebuild a control-plane node: roll them by hand.
    ignore_changes = [user_data, image, ssh_keys]
  }

  depends_on = [hcloud_network_subnet.nodes]
}

resource "hcloud_server" "agent" {
  for_each           = local.agents
  name               = "${var.name}-${each.key}"
  server_type        = each.value.spec.server_type
  image              = var.image
  location           = var.location
  ssh_keys           = [for k in hcloud_ssh_key.this : k.id]
  firewall_ids       = [hcloud_firewall.nodes.id]
  placement_group_id = hcloud_placement_group.pool[each.value.pool].id
  labels             = merge(local.labels, { "natsq.io/role" = "agent", "natsq.io/pool" = each.value.pool })

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    role        = "agent"
    k3s_version = var.k3s_version
    k3s_token   = var.k3s_token
    private_ip  = each.value.private_ip
    join_url    = "https://${local.api_lb_ip}:6443"
    tls_sans    = []
    node_labels = merge(each.value.spec.labels, { "natsq.io/pool" = each.value.pool })
    node_taints = each.value.spec.dedicated ? ["natsq.io/pool=${each.value.pool}:NoSchedule"] : []
  })

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }

  network {
    network_id = hcloud_network.this.id
    ip         = each.value.private_ip
  }

  lifecycle {
    ignore_changes = [user_data, image, ssh_keys]
  }

  depends_on = [hcloud_network_subnet.nodes, hcloud_server.control_plane]
}

# Kubernetes API load balancer: public 6443 -> control planes over the
# private network. Admin CIDRs are enforced by the API server's own
# authentication; Hetzner LBs cannot filter sources.
resource "hcloud_load_balancer" "api" {
  name               = "${var.name}-api"
  load_balancer_type = var.load_balancer_type
  location           = var.location
  labels             = local.labels
}

resource "hcloud_load_balancer_network" "api" {
  load_balancer_id = hcloud_load_balancer.api.id
  network_id       = hcloud_network.this.id
  ip               = local.api_lb_ip

  depends_on = [hcloud_network_subnet.nodes]
}

resource "hcloud_load_balancer_target" "api" {
  type             = "label_selector"
  load_balancer_id = hcloud_load_balancer.api.id
  label_selector   = "natsq.io/cluster=${var.name},natsq.io/role=control-plane"
  use_private_ip   = true

  depends_on = [hcloud_load_balancer_network.api]
}

resource "hcloud_load_balancer_service" "api" {
  load_balancer_id = hcloud_load_balancer.api.id
  protocol         = "tcp"
  listen_port      = 6443
  destination_port = 6443

  health_check {
    protocol = "tcp"
    port     = 6443
    interval = 10
    timeout  = 5
    retries  = 3
  }
}
