# The sqs-worker module on a real AWS account, with an IAM role for the worker's Kubernetes
# service account (IRSA). Credentials and region come from the usual AWS chain.
#
#   terraform init && terraform apply -var oidc_provider_arn=... -var oidc_provider_url=...
#   terraform output -raw veltrix_config > queues.toml

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
  description = "Base name of the queues."
  type        = string
  default     = "orders"
}

variable "fifo" {
  description = "FIFO queues (ordered per message group)."
  type        = bool
  default     = false
}

variable "targets" {
  description = "Target queues for forward actions, by target name."
  type        = list(string)
  default     = ["fraud", "billing"]
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's OIDC provider (for IRSA)."
  type        = string
}

variable "oidc_provider_url" {
  description = "URL of the EKS cluster's OIDC provider without https:// (oidc.eks.REGION.amazonaws.com/id/ID)."
  type        = string
}

variable "service_account" {
  description = "The worker's Kubernetes service account, NAMESPACE:NAME."
  type        = string
  default     = "veltrix:veltrix-orders"
}

variable "kms_key_arn" {
  description = "A customer-managed KMS key for the queues (SSE-KMS); null uses SQS-managed encryption."
  type        = string
  default     = null
}

module "worker" {
  source            = "../../modules/sqs-worker"
  name              = var.name
  fifo              = var.fifo
  targets           = var.targets
  max_receive_count = 10
  kms_key_arn       = var.kms_key_arn
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    # Only this service account's tokens, and only tokens minted for STS: without the :aud
    # condition a token the cluster issued for another audience would be accepted too.
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name}-veltrix-worker"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "veltrix-queues"
  role   = aws_iam_role.worker.id
  policy = module.worker.worker_policy_json
}

output "veltrix_config" {
  value = module.worker.veltrix_config
}

output "worker_role_arn" {
  description = "Annotate the service account with eks.amazonaws.com/role-arn = this."
  value       = aws_iam_role.worker.arn
}

output "replay_policy_json" {
  description = "IAM policy for whoever runs `veltrix dlq replay` (attach it to their role)."
  value       = module.worker.replay_policy_json
}
