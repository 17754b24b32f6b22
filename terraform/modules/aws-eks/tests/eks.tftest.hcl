# Runs offline with a mocked AWS provider (the provider binary must be in a
# local plugin directory for its schema; tests/terraform passes -plugin-dir).

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_eks_cluster" {
    defaults = {
      endpoint              = "https://ABCDEF.gr7.eu-central-1.eks.amazonaws.com"
      certificate_authority = [{ data = "LS0tLS1CRUdJTg==" }]
      identity              = [{ oidc = [{ issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/ABCDEF" }] }]
    }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-central-1:111122223333:key/00000000-0000-0000-0000-000000000000" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-central-1:111122223333:log-group:/aws/eks/aws-test/cluster" }
  }
}

variables {
  name                         = "aws-test"
  kubernetes_version           = "1.34"
  vpc_id                       = "vpc-0123456789abcdef0"
  subnet_ids                   = ["subnet-a", "subnet-b", "subnet-c"]
  endpoint_public_access_cidrs = ["198.51.100.0/24"]
  admin_principal_arns         = ["arn:aws:iam::111122223333:role/platform-admin"]
  logs_kms_key_arn             = "arn:aws:kms:eu-central-1:111122223333:key/11111111-1111-1111-1111-111111111111"
  node_groups = {
    data    = { instance_types = ["m7i.large"], min_size = 3, max_size = 6, desired_size = 3, dedicated = true }
    workers = { instance_types = ["c7i.xlarge"], min_size = 3, max_size = 20, desired_size = 3 }
  }
}

run "cluster_is_encrypted_private_and_logged" {
  command = apply

  assert {
    condition     = aws_eks_cluster.this.encryption_config[0].resources == toset(["secrets"])
    error_message = "Secrets must be envelope-encrypted with KMS"
  }
  assert {
    condition     = aws_eks_cluster.this.vpc_config[0].endpoint_private_access && aws_eks_cluster.this.vpc_config[0].endpoint_public_access
    error_message = "private endpoint always on; public only with CIDRs"
  }
  assert {
    condition     = length(aws_eks_cluster.this.enabled_cluster_log_types) == 5
    error_message = "all control-plane log types enabled"
  }
  assert {
    condition     = aws_eks_cluster.this.access_config[0].bootstrap_cluster_creator_admin_permissions == false
    error_message = "admins are explicit access entries, never the creator implicitly"
  }
  assert {
    condition     = aws_kms_key.cluster.enable_key_rotation
    error_message = "KMS key rotation on"
  }
}

run "separate_node_pools_for_data_and_workers" {
  command = apply

  assert {
    condition     = length(aws_eks_node_group.this) == 2
    error_message = "one managed node group per pool"
  }
  assert {
    condition     = length(aws_eks_node_group.this["data"].taint) == 1 && length(aws_eks_node_group.this["workers"].taint) == 0
    error_message = "only the dedicated data pool is tainted"
  }
  assert {
    condition     = aws_eks_node_group.this["data"].labels["natsq.io/pool"] == "data"
    error_message = "pools carry the natsq.io/pool label"
  }
  assert {
    condition     = alltrue([for lt in aws_launch_template.node : lt.block_device_mappings[0].ebs[0].encrypted == "true" && lt.metadata_options[0].http_tokens == "required"])
    error_message = "node volumes encrypted, IMDSv2 required"
  }
}

run "cloud_access_through_pod_identity" {
  command = apply

  assert {
    condition     = aws_eks_addon.ebs_csi.pod_identity_association != null && aws_eks_addon.vpc_cni.pod_identity_association != null
    error_message = "EBS CSI and VPC CNI get their AWS permissions through Pod Identity"
  }
  assert {
    condition     = aws_eks_pod_identity_association.cluster_autoscaler.service_account == "cluster-autoscaler"
    error_message = "cluster-autoscaler bound to its own role"
  }
  assert {
    condition     = !contains([for a in aws_iam_role_policy_attachment.node : a.policy_arn], "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy")
    error_message = "the CNI policy must not be on the node role"
  }
  assert {
    condition     = aws_iam_openid_connect_provider.this.url == "https://oidc.eks.eu-central-1.amazonaws.com/id/ABCDEF"
    error_message = "IRSA OIDC provider points at the cluster issuer"
  }
}

run "rejects_open_api_endpoint" {
  command = plan

  variables {
    endpoint_public_access_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.endpoint_public_access_cidrs]
}

run "rejects_inverted_node_group_sizes" {
  command = plan

  variables {
    node_groups = {
      workers = { instance_types = ["c7i.xlarge"], min_size = 5, max_size = 3, desired_size = 4 }
    }
  }

  expect_failures = [var.node_groups]
}
