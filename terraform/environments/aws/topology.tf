# ---- shared by the three environments (keep identical) ----------------------

module "topology" {
  source = "../../modules/multicloud-topology"

  clusters     = var.fleet
  this_cluster = var.cluster_name
  mode         = var.nats_mode
  dns_zone     = var.dns_zone
}
