# State in OVHcloud Object Storage through the S3 backend: server-side
# encrypted, locked with S3 conditional writes (use_lockfile; OVHcloud Object
# Storage supports conditional writes). Bucket, endpoint and region come from
# backend.hcl (copy backend.hcl.example); credentials from AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY (OVHcloud S3 user keys).
terraform {
  backend "s3" {
    key                         = "natsq/ovh/terraform.tfstate"
    encrypt                     = true
    use_lockfile                = true
    skip_credentials_validation = true
    skip_region_validation      = true
    skip_requesting_account_id  = true
    skip_metadata_api_check     = true
    skip_s3_checksum            = true
  }
}
