# An SQS queue set for one veltrix worker: the source queue, its dead-letter queue with a
# redrive policy, optional target queues, and the IAM policy the worker needs (nothing more).

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  suffix      = var.fifo ? ".fifo" : ""
  source_name = "${var.name}${local.suffix}"
  dlq_name    = "${var.name}-dlq${local.suffix}"
  # Known before the source queue exists, so the dead-letter queue's redrive_allow_policy can
  # name it inline (the separate redrive-allow resource hangs on destroy in LocalStack).
  source_arn = "arn:${data.aws_partition.current.partition}:sqs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:${local.source_name}"
}

resource "aws_sqs_queue" "dead_letter" {
  name                      = local.dlq_name
  fifo_queue                = var.fifo
  message_retention_seconds = var.dead_letter_retention_seconds
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
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = var.tags
}

resource "aws_sqs_queue" "target" {
  for_each   = toset(var.targets)
  name       = "${var.name}-${each.key}${local.suffix}"
  fifo_queue = var.fifo
  tags       = var.tags
}

# Exactly what the worker calls: receive, delete, change visibility and read attributes (the
# backlog gauge) on the source; send to the dead-letter queue and the targets.
data "aws_iam_policy_document" "worker" {
  statement {
    sid = "ConsumeSource"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.source.arn]
  }
  statement {
    sid       = "SendDeadLettersAndForwards"
    actions   = ["sqs:SendMessage"]
    resources = concat([aws_sqs_queue.dead_letter.arn], [for q in aws_sqs_queue.target : q.arn])
  }
}

# For operators running `veltrix dlq replay`: read and delete dead letters, send to the source.
data "aws_iam_policy_document" "replay" {
  statement {
    sid = "ReadDeadLetters"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.dead_letter.arn]
  }
  statement {
    sid       = "SendToSource"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.source.arn]
  }
}
