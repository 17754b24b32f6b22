# Offline tests: this module has no providers, so `terraform test` runs it
# for real (command = apply creates nothing).

variables {
  dns_zone = "natsq.example.com"
  clusters = {
    aws-euc1 = {
      cloud                = "aws"
      region               = "eu-central-1"
      ingress_address      = "k8s-natsq-0123.elb.eu-central-1.amazonaws.com"
      nats_gateway_address = "nlb-gw-0123.elb.eu-central-1.amazonaws.com"
      weight               = 50
    }
    hetzner-fsn1 = {
      cloud                = "hetzner"
      region               = "fsn1"
      ingress_address      = "203.0.113.10"
      nats_gateway_address = "203.0.113.11"
      weight               = 30
      leafnode_hub         = true
    }
    ovh-gra = {
      cloud                = "ovh"
      region               = "GRA9"
      ingress_address      = "2001:db8::10"
      nats_gateway_address = null
      weight               = 20
    }
  }
}

run "gateways_form_a_full_mesh" {
  command = apply

  variables {
    this_cluster = "aws-euc1"
  }

  assert {
    condition     = join(",", output.cluster_names) == "aws-euc1,hetzner-fsn1,ovh-gra"
    error_message = "cluster names must be sorted keys"
  }
  assert {
    condition     = alltrue([for name, gw in output.nats_gateways : length(gw.gateways) == 2 && !contains([for g in gw.gateways : g.name], name)])
    error_message = "every cluster must list every other cluster and never itself"
  }
  assert {
    condition     = output.nats_gateways["ovh-gra"].advertise == "ovh-gra.gw.nats.natsq.example.com:7222"
    error_message = "gateways must advertise their stable DNS name"
  }
  assert {
    condition     = strcontains(output.this_nats_conf, "name: \"aws-euc1\"") && strcontains(output.this_nats_conf, "hetzner-fsn1.gw.nats.natsq.example.com:7222")
    error_message = "this_nats_conf must be the gateway block of aws-euc1 with its remotes"
  }
  assert {
    condition     = !strcontains(output.this_nats_conf, "leafnodes")
    error_message = "gateway mode must not render leaf nodes"
  }
  assert {
    condition     = !strcontains(output.this_nats_conf, "password") && strcontains(output.this_nats_conf, "verify: true")
    error_message = "gateways authenticate with mutual TLS, never with rendered passwords"
  }
}

run "dns_records_pick_types_and_weights" {
  command = apply

  assert {
    condition     = one([for r in output.dns_records : r.type if r.name == "hetzner-fsn1.api.natsq.example.com"]) == "A"
    error_message = "an IPv4 ingress address must give an A record"
  }
  assert {
    condition     = one([for r in output.dns_records : r.type if r.name == "ovh-gra.api.natsq.example.com"]) == "AAAA"
    error_message = "an IPv6 ingress address must give an AAAA record"
  }
  assert {
    condition     = one([for r in output.dns_records : r.type if r.name == "aws-euc1.api.natsq.example.com"]) == "CNAME"
    error_message = "a hostname ingress address must give a CNAME record"
  }
  assert {
    condition     = length([for r in output.dns_records : r if r.name == "api.natsq.example.com"]) == 3
    error_message = "every cluster with an ingress gets one weighted record on the steered name"
  }
  assert {
    condition     = alltrue([for r in output.dns_records : r.type == "CNAME" && r.health_check.resource_path == "/readyz" if r.name == "api.natsq.example.com"])
    error_message = "steered records are health-checked CNAMEs to the per-cluster name"
  }
  assert {
    condition     = length([for r in output.dns_records : r if r.name == "ovh-gra.gw.nats.natsq.example.com"]) == 0
    error_message = "no gateway record without a gateway address"
  }
  assert {
    condition     = output.serving_weight == 100
    error_message = "serving weight must add up the weights"
  }
}

run "draining_a_cluster_sets_its_weight_to_zero" {
  command = apply

  variables {
    clusters = {
      aws-euc1     = { cloud = "aws", region = "eu-central-1", ingress_address = "198.51.100.1", serving = false }
      hetzner-fsn1 = { cloud = "hetzner", region = "fsn1", ingress_address = "198.51.100.2" }
    }
  }

  assert {
    condition     = one([for r in output.dns_records : r.weight if r.set_identifier == "aws-euc1"]) == 0
    error_message = "a drained cluster must keep its record with weight 0"
  }
  assert {
    condition     = output.serving_weight == 100
    error_message = "only serving clusters count"
  }
}

run "leafnodes_mode_hub_and_spokes" {
  command = apply

  variables {
    mode = "leafnodes"
  }

  assert {
    condition     = strcontains(output.nats_conf["hetzner-fsn1"], "port: 7422") && !strcontains(output.nats_conf["hetzner-fsn1"], "remotes")
    error_message = "the hub listens for leaf nodes"
  }
  assert {
    condition     = strcontains(output.nats_conf["ovh-gra"], "domain: \"ovh-gra\"") && strcontains(output.nats_conf["ovh-gra"], "leaf.nats.natsq.example.com:7422")
    error_message = "spokes get their own JetStream domain and dial the hub"
  }
  assert {
    condition     = length([for r in output.dns_records : r if r.name == "leaf.nats.natsq.example.com"]) == 1
    error_message = "the hub gets a leaf-node DNS name"
  }
}

run "rejects_bad_cluster_names" {
  command = plan

  variables {
    clusters = { "AWS_1" = { cloud = "aws", region = "eu-central-1" } }
  }

  expect_failures = [var.clusters]
}

run "rejects_unknown_cloud" {
  command = plan

  variables {
    clusters = { gcp-one = { cloud = "gcp", region = "europe-west1" } }
  }

  expect_failures = [var.clusters]
}

run "rejects_two_hubs" {
  command = plan

  variables {
    clusters = {
      aws-one     = { cloud = "aws", region = "eu-central-1", leafnode_hub = true }
      hetzner-one = { cloud = "hetzner", region = "fsn1", leafnode_hub = true }
    }
  }

  expect_failures = [var.clusters]
}

run "rejects_unknown_this_cluster" {
  command = plan

  variables {
    this_cluster = "nowhere"
  }

  expect_failures = [var.this_cluster]
}

run "leafnodes_mode_needs_a_hub" {
  command = plan

  variables {
    mode = "leafnodes"
    clusters = {
      aws-one     = { cloud = "aws", region = "eu-central-1" }
      hetzner-one = { cloud = "hetzner", region = "fsn1" }
    }
  }

  expect_failures = [var.mode]
}
