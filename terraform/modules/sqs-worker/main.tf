# An SQS queue set for one veltrix worker: the source queue, its dead-letter queue with a
# redrive policy, optional target queues, and the IAM policy the worker needs (nothing more).
# Every queue is encrypted at rest (SSE-SQS, or SSE-KMS with kms_key_arn) and refuses requests
# that do not use TLS.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  suffix       = var.fifo ? ".fifo" : ""
  source_name  = "${var.name}${local.suffix}"
  dlq_name     = "${var.name}-dlq${local.suffix}"
  target_names = { for t in var.targets : t => "${var.name}-${t}${local.suffix}" }

  # Queue ARNs, known before the queues exist: the dead-letter queue's redrive_allow_policy
  # names the source inline (the separate redrive-allow resource hangs on destroy in
  # LocalStack), each queue carries its own policy inline (a separate aws_sqs_queue_policy
  # would add a propagation wait per queue), and the IAM documents are known at plan time.
  arn_prefix  = "arn:${data.aws_partition.current.partition}:sqs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}"
  source_arn  = "${local.arn_prefix}:${local.source_name}"
  dlq_arn     = "${local.arn_prefix}:${local.dlq_name}"
  target_arns = { for t, n in local.target_names : t => "${local.arn_prefix}:${n}" }
  queue_arns = merge(
    { source = local.source_arn, dead_letter = local.dlq_arn },
    { for t, arn in local.target_arns : "target-${t}" => arn },
  )

  # Server-side encryption of every queue: SQS-managed keys unless a KMS key is given.
  sse_sqs           = var.kms_key_arn == null ? true : null
  kms_reuse_seconds = var.kms_key_arn == null ? null : var.kms_data_key_reuse_period_seconds
}

# Each queue's resource policy: deny any request that does not arrive over TLS. The source
# queue's policy also takes var.source_policy_json (e.g. an SNS topic's right to send).
data "aws_iam_policy_document" "queue" {
  for_each                = local.queue_arns
  source_policy_documents = each.key == "source" && var.source_policy_json != null ? [var.source_policy_json] : []
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [each.value]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue" "dead_letter" {
  name                      = local.dlq_name
  fifo_queue                = var.fifo
  message_retention_seconds = var.dead_letter_retention_seconds
  policy                    = data.aws_iam_policy_document.queue["dead_letter"].json

  sqs_managed_sse_enabled           = local.sse_sqs
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = local.kms_reuse_seconds

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [local.source_arn]
  })
  tags = var.tags
}

resource "aws_sqs_queue" "source" {
  name                       = local.source_name
  fifo_queue                 = var.fifo
  visibility_timeout_seconds = var.visibility_timeout_seconds
  message_retention_seconds  = var.message_retention_seconds
  policy                     = data.aws_iam_policy_document.queue["source"].json

  sqs_managed_sse_enabled           = local.sse_sqs
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = local.kms_reuse_seconds

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = var.tags
}

resource "aws_sqs_queue" "target" {
  for_each   = local.target_names
  name       = each.value
  fifo_queue = var.fifo
  policy     = data.aws_iam_policy_document.queue["target-${each.key}"].json

  sqs_managed_sse_enabled           = local.sse_sqs
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = local.kms_reuse_seconds

  tags = var.tags
}

# With a KMS key: receiving decrypts, sending encrypts. Part of the worker and replay policies.
data "aws_iam_policy_document" "kms" {
  count = var.kms_key_arn == null ? 0 : 1
  statement {
    sid       = "UseQueueKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

# Exactly what the worker calls: receive, delete, change visibility and read attributes (the
# backlog gauge) on the source; send to the dead-letter queue and the targets, and read their
# attributes (`veltrix check --preflight` compares them with the config); use the KMS key, if
# any.
data "aws_iam_policy_document" "worker" {
  source_policy_documents = data.aws_iam_policy_document.kms[*].json
  statement {
    sid = "ConsumeSource"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [local.source_arn]
  }
  statement {
    sid       = "SendDeadLettersAndForwards"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = concat([local.dlq_arn], values(local.target_arns))
  }
}

# For operators running `veltrix dlq replay`: read and delete dead letters, send to the source.
data "aws_iam_policy_document" "replay" {
  source_policy_documents = data.aws_iam_policy_document.kms[*].json
  statement {
    sid = "ReadDeadLetters"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [local.dlq_arn]
  }
  statement {
    sid       = "SendToSource"
    actions   = ["sqs:SendMessage"]
    resources = [local.source_arn]
  }
}
