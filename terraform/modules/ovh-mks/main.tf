resource "ovh_cloud_project_network_private" "this" {
  service_name = var.service_name
  name         = var.name
  regions      = [var.region]
  vlan_id      = var.vlan_id
}

resource "ovh_cloud_project_network_private_subnet" "nodes" {
  service_name = var.service_name
  network_id   = ovh_cloud_project_network_private.this.id
  region       = var.region
  network      = var.subnet_cidr
  start        = cidrhost(var.subnet_cidr, 10)
  end          = cidrhost(var.subnet_cidr, -10)
  dhcp         = true
  no_gateway   = false
}

# Managed gateway: egress (SNAT) for nodes that have no public IPs.
resource "ovh_cloud_project_gateway" "this" {
  service_name = var.service_name
  name         = "${var.name}-gw"
  model        = var.gateway_model
  region       = var.region
  network_id   = tolist(ovh_cloud_project_network_private.this.regions_attributes)[0].openstackid
  subnet_id    = ovh_cloud_project_network_private_subnet.nodes.id
}

resource "ovh_cloud_project_kube" "this" {
  service_name       = var.service_name
  name               = var.name
  region             = var.region
  version            = var.kubernetes_version
  private_network_id = tolist(ovh_cloud_project_network_private.this.regions_attributes)[0].openstackid
  nodes_subnet_id    = ovh_cloud_project_network_private_subnet.nodes.id
  update_policy      = "MINIMAL_DOWNTIME"
  kube_proxy_mode    = "iptables"

  private_network_configuration {
    default_vrack_gateway              = ""
    private_network_routing_as_default = true
  }

  depends_on = [ovh_cloud_project_gateway.this]
}

resource "ovh_cloud_project_kube_iprestrictions" "this" {
  service_name = var.service_name
  kube_id      = ovh_cloud_project_kube.this.id
  ips          = var.api_allowed_cidrs
}

resource "ovh_cloud_project_kube_nodepool" "this" {
  for_each           = var.node_pools
  service_name       = var.service_name
  kube_id            = ovh_cloud_project_kube.this.id
  name               = each.key
  flavor_name        = each.value.flavor_name
  desired_nodes      = each.value.desired_nodes
  min_nodes          = each.value.min_nodes
  max_nodes          = each.value.max_nodes
  autoscale          = each.value.autoscale
  anti_affinity      = each.value.anti_affinity
  monthly_billed     = each.value.monthly_billed
  availability_zones = length(each.value.availability_zones) > 0 ? each.value.availability_zones : null

  template {
    metadata {
      annotations = {}
      finalizers  = []
      labels      = merge(each.value.labels, { "natsq.io/pool" = each.key })
    }
    spec {
      unschedulable = false
      taints = each.value.dedicated ? [{
        key    = "natsq.io/pool"
        value  = each.key
        effect = "NoSchedule"
      }] : []
    }
  }

  lifecycle {
    # The autoscaler owns the current size.
    ignore_changes = [desired_nodes]
  }
}
