locals {
  names = sort(keys(var.clusters))
  hubs  = [for name in local.names : name if var.clusters[name].leafnode_hub]
  hub   = length(local.hubs) == 1 ? local.hubs[0] : null

  # Stable names: NATS configs point at DNS names, never at load-balancer
  # addresses, so re-creating a load balancer only changes one DNS record.
  api_fqdn     = "${var.api_record_name}.${var.dns_zone}"
  cluster_api  = { for name in local.names : name => "${name}.${local.api_fqdn}" }
  gateway_fqdn = { for name in local.names : name => "${name}.gw.nats.${var.dns_zone}" }
  leaf_fqdn    = local.hub == null ? null : "leaf.nats.${var.dns_zone}"

  ipv4_pattern = "^((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$"
  ipv6_pattern = "^[0-9a-fA-F:]+:[0-9a-fA-F:]*$"

  record_type = { for name, c in var.clusters : name => {
    ingress = c.ingress_address == null ? null : (
      can(regex(local.ipv4_pattern, c.ingress_address)) ? "A" : (can(regex(local.ipv6_pattern, c.ingress_address)) ? "AAAA" : "CNAME")
    )
    gateway = c.nats_gateway_address == null ? null : (
      can(regex(local.ipv4_pattern, c.nats_gateway_address)) ? "A" : (can(regex(local.ipv6_pattern, c.nats_gateway_address)) ? "AAAA" : "CNAME")
    )
  } }

  # Structured form of each cluster's gateway block; the text form below is
  # what goes into nats-server.conf. Gateways and leaf nodes authenticate each
  # other with mutual TLS (verify: true) against the fleet CA, so no password
  # is ever rendered here or stored in Terraform state.
  gateway = { for name in local.names : name => {
    name      = name
    port      = var.gateway_port
    advertise = "${local.gateway_fqdn[name]}:${var.gateway_port}"
    gateways = [for other in local.names : {
      name = other
      urls = ["nats://${local.gateway_fqdn[other]}:${var.gateway_port}"]
    } if other != name]
  } }

  gateway_conf = { for name in local.names : name => join("\n", concat(
    [
      "gateway {",
      "  name: \"${name}\"",
      "  port: ${var.gateway_port}",
      "  advertise: \"${local.gateway[name].advertise}\"",
      "  tls {",
      "    cert_file: \"/etc/nats-certs/gateway/tls.crt\"",
      "    key_file: \"/etc/nats-certs/gateway/tls.key\"",
      "    ca_file: \"/etc/nats-certs/gateway/ca.crt\"",
      "    verify: true",
      "  }",
      "  gateways: [",
    ],
    [for gw in local.gateway[name].gateways : "    { name: \"${gw.name}\", urls: [\"${gw.urls[0]}\"] }"],
    ["  ]", "}", ""],
  )) }

  leafnode_conf = { for name in local.names : name => (
    local.hub == null ? "" : name == local.hub ? join("\n", [
      "leafnodes {",
      "  port: ${var.leafnode_port}",
      "  tls {",
      "    cert_file: \"/etc/nats-certs/leaf/tls.crt\"",
      "    key_file: \"/etc/nats-certs/leaf/tls.key\"",
      "    ca_file: \"/etc/nats-certs/leaf/ca.crt\"",
      "    verify: true",
      "  }",
      "}",
      "",
      ]) : join("\n", [
      "jetstream { domain: \"${name}\" }",
      "leafnodes {",
      "  remotes: [",
      "    {",
      "      urls: [\"tls://${local.leaf_fqdn}:${var.leafnode_port}\"]",
      "      tls {",
      "        cert_file: \"/etc/nats-certs/leaf/tls.crt\"",
      "        key_file: \"/etc/nats-certs/leaf/tls.key\"",
      "        ca_file: \"/etc/nats-certs/leaf/ca.crt\"",
      "      }",
      "    }",
      "  ]",
      "}",
      "",
    ])
  ) }

  nats_conf = { for name in local.names : name => (
    var.mode == "gateways" ? local.gateway_conf[name] : local.leafnode_conf[name]
  ) }

  # Route 53 shaped records (other DNS providers map 1:1 except the weights).
  cluster_records = concat(
    [for name in local.names : {
      name           = local.cluster_api[name]
      type           = local.record_type[name].ingress
      ttl            = var.dns_ttl
      records        = [var.clusters[name].ingress_address]
      set_identifier = null
      weight         = null
      health_check   = null
    } if var.clusters[name].ingress_address != null],
    [for name in local.names : {
      name           = local.gateway_fqdn[name]
      type           = local.record_type[name].gateway
      ttl            = var.dns_ttl
      records        = [var.clusters[name].nats_gateway_address]
      set_identifier = null
      weight         = null
      health_check   = null
    } if var.clusters[name].nats_gateway_address != null],
    local.hub == null ? [] : [for name in [local.hub] : {
      name           = local.leaf_fqdn
      type           = "CNAME"
      ttl            = var.dns_ttl
      records        = [local.gateway_fqdn[name]]
      set_identifier = null
      weight         = null
      health_check   = null
    } if var.clusters[name].nats_gateway_address != null],
  )

  # The steered name is a weighted CNAME per cluster pointing at the cluster's
  # own name; a failing health check or serving = false takes it out.
  steered_records = [for name in local.names : {
    name           = local.api_fqdn
    type           = "CNAME"
    ttl            = var.dns_ttl
    records        = [local.cluster_api[name]]
    set_identifier = name
    weight         = var.clusters[name].serving ? var.clusters[name].weight : 0
    health_check = {
      fqdn          = local.cluster_api[name]
      port          = 443
      type          = "HTTPS"
      resource_path = "/readyz"
    }
  } if var.clusters[name].ingress_address != null]

  serving_weight = sum(concat([0], [for r in local.steered_records : r.weight]))
}
