locals {
  kubeconfig = null # EKS uses exec auth: run kubeconfig_command
  cloud      = "aws"
  region     = var.region
  tags = {
    "natsq.io/cluster"     = var.cluster_name
    "natsq.io/environment" = "aws"
    "managed-by"           = "terraform"
  }
  api_endpoint       = module.eks.cluster_endpoint
  kubeconfig_command = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first three names (sorted) are used, so a zone AWS adds later never moves the cluster.
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

module "network" {
  source = "../../modules/aws-network"

  name               = var.cluster_name
  cidr_block         = var.vpc_cidr
  availability_zones = slice(sort(data.aws_availability_zones.available.names), 0, 3)
  single_nat_gateway = var.single_nat_gateway
}

module "eks" {
  source = "../../modules/aws-eks"

  name                         = var.cluster_name
  kubernetes_version           = var.kubernetes_version
  vpc_id                       = module.network.vpc_id
  subnet_ids                   = module.network.private_subnet_ids
  endpoint_public_access_cidrs = var.api_allowed_cidrs
  admin_principal_arns         = var.admin_principal_arns
  logs_kms_key_arn             = module.network.logs_kms_key_arn
  node_groups                  = var.node_groups
}

module "addons" {
  source = "../../modules/cluster-addons"

  environment   = "aws"
  cluster_name  = var.cluster_name
  storage_class = "gp3-encrypted"
  storage_class_spec = {
    provisioner = "ebs.csi.aws.com"
    parameters = {
      type      = "gp3"
      encrypted = "true"
      kmsKeyId  = module.eks.cluster_kms_key_arn
    }
  }
  vault                = var.vault
  acme_email           = var.acme_email
  nats_multicloud_conf = module.topology.this_nats_conf
  chart_versions       = var.chart_versions
  app = {
    repo_url        = var.app_repo_url
    target_revision = var.app_revision
    overlay         = coalesce(var.app_overlay, "prod-${local.cloud}")
  }

  depends_on = [module.eks]
}

# Scales the managed node groups; its AWS permissions come from the Pod
# Identity association created in modules/aws-eks.
resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_chart_version
  namespace  = "kube-system"
  atomic     = true

  values = [yamlencode({
    autoDiscovery = { clusterName = module.eks.cluster_name }
    awsRegion     = var.region
    rbac          = { serviceAccount = { create = true, name = "cluster-autoscaler" } }
    extraArgs     = { balance-similar-node-groups = true, skip-nodes-with-local-storage = false, expander = "least-waste" }
  })]

  depends_on = [module.eks]
}
