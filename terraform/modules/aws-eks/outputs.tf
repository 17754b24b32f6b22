output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_ca_certificate" {
  description = "Base64-encoded cluster CA certificate."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_kms_key_arn" {
  description = "KMS key for Secrets envelope encryption and EBS volumes (use it in StorageClasses)."
  value       = aws_kms_key.cluster.arn
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider ARN for IRSA."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "node_role_arn" {
  description = "IAM role of the managed nodes."
  value       = aws_iam_role.node.arn
}

output "node_group_names" {
  description = "Managed node group names by pool key."
  value       = { for k, g in aws_eks_node_group.this : k => g.node_group_name }
}

output "cluster_autoscaler_role_arn" {
  description = "Pod Identity role bound to kube-system/cluster-autoscaler."
  value       = aws_iam_role.cluster_autoscaler.arn
}
