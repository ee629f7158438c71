# The sqs-worker module against LocalStack (localstack/start.sh), as CI applies it:
#
#   localstack/start.sh
#   cd terraform/examples/localstack && terraform init && terraform apply
#   terraform output -raw veltrix_config > /tmp/queues.toml     # + [pipeline] and [[rules]]
#
# Any credentials work with LocalStack; the provider is told not to check them.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "name" {
  description = "Base name of the queues (tests pass a unique one per run)."
  type        = string
  default     = "veltrix-orders"
}

variable "localstack_endpoint" {
  description = "LocalStack's edge endpoint."
  type        = string
  default     = "http://127.0.0.1:4566"
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {
    sqs = var.localstack_endpoint
    sts = var.localstack_endpoint
    iam = var.localstack_endpoint
  }
}

module "worker" {
  source            = "../../modules/sqs-worker"
  name              = var.name
  targets           = ["forwarded"]
  max_receive_count = 10
  endpoint_url      = var.localstack_endpoint
}

output "veltrix_config" {
  description = "The [source] and [targets.*] tables for the worker."
  value       = module.worker.veltrix_config
}

output "source_queue_url" {
  value = module.worker.source_queue_url
}

output "dead_letter_queue_url" {
  value = module.worker.dead_letter_queue_url
}

output "target_queue_urls" {
  value = module.worker.target_queue_urls
}

output "worker_policy_json" {
  value = module.worker.worker_policy_json
}
