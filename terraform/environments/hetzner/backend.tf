# State in Hetzner Object Storage through the S3 backend: server-side
# encrypted, locked with S3 conditional writes (use_lockfile). Bucket,
# endpoint and region come from backend.hcl (copy backend.hcl.example);
# credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (Object Storage keys).
# See docs/runbooks/hetzner.md: verify conditional-write support before relying
# on the lock, or point backend.hcl at the AWS state bucket instead.
terraform {
  backend "s3" {
    key                         = "natsq/hetzner/terraform.tfstate"
    encrypt                     = true
    use_lockfile                = true
    skip_credentials_validation = true
    skip_region_validation      = true
    skip_requesting_account_id  = true
    skip_metadata_api_check     = true
    skip_s3_checksum            = true
    use_path_style              = true
  }
}
