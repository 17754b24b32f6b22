# Runs offline with a mocked AWS provider (the provider binary must be in a
# local plugin directory for its schema; tests/terraform passes -plugin-dir).

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-central-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-central-1:111122223333:log-group:/aws/vpc/aws-test/flow-logs" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::111122223333:role/mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-central-1:111122223333:key/00000000-0000-0000-0000-000000000000" }
  }
}

variables {
  name               = "aws-test"
  cidr_block         = "10.50.0.0/16"
  availability_zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
}

run "three_zones_private_and_public" {
  command = apply

  assert {
    condition     = length(aws_subnet.private) == 3 && length(aws_subnet.public) == 3
    error_message = "one private and one public subnet per zone"
  }
  assert {
    condition     = length(distinct([for s in aws_subnet.private : s.availability_zone])) == 3
    error_message = "private subnets must be in three distinct zones"
  }
  assert {
    condition     = alltrue([for s in aws_subnet.public : s.map_public_ip_on_launch == false])
    error_message = "nothing gets a public IP by default"
  }
  assert {
    condition     = length(aws_nat_gateway.this) == 3
    error_message = "one NAT gateway per zone by default"
  }
  assert {
    condition     = length(distinct(concat([for s in aws_subnet.private : s.cidr_block], [for s in aws_subnet.public : s.cidr_block]))) == 6
    error_message = "subnet ranges must not overlap"
  }
  assert {
    condition     = aws_kms_key.logs.enable_key_rotation && aws_cloudwatch_log_group.flow_logs.retention_in_days == 365
    error_message = "log key rotates; flow logs kept a year"
  }
}

run "single_nat_gateway" {
  command = apply

  variables {
    single_nat_gateway = true
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 1 && length(aws_route.private_nat) == 3
    error_message = "one shared NAT gateway, still one route per private table"
  }
}

run "rejects_two_zones" {
  command = plan

  variables {
    availability_zones = ["eu-central-1a", "eu-central-1b"]
  }

  expect_failures = [var.availability_zones]
}
