output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnet IDs, one per availability zone, in the order of availability_zones."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnet IDs (load balancers only), one per availability zone."
  value       = aws_subnet.public[*].id
}

output "logs_kms_key_arn" {
  description = "ARN of the KMS key that encrypts this environment's CloudWatch log groups."
  value       = aws_kms_key.logs.arn
}

output "nat_public_ips" {
  description = "Egress IPs of the NAT gateways (allow-list them where the cluster calls out, e.g. Vault)."
  value       = aws_eip.nat[*].public_ip
}
