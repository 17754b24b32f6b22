# State in S3, encrypted with a KMS key, locked with S3 conditional writes
# (use_lockfile, Terraform >= 1.10; no DynamoDB table). Bucket, region and
# kms_key_id come from backend.hcl (copy backend.hcl.example):
#   terraform init -backend-config=backend.hcl
terraform {
  backend "s3" {
    key          = "natsq/aws/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
