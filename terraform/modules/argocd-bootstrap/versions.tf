terraform {
  # Provider-free on purpose: it only computes the root Application, so it can be
  # initialised, validated and tested without any registry access.
  required_version = ">= 1.11.0, < 2.0.0"
}
