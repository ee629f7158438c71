output "source_queue_url" {
  description = "URL of the source queue (the worker's [source] queue_url)."
  value       = aws_sqs_queue.source.url
}

output "source_queue_arn" {
  description = "ARN of the source queue."
  value       = aws_sqs_queue.source.arn
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue (the worker's [targets.dlq])."
  value       = aws_sqs_queue.dead_letter.url
}

output "dead_letter_queue_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dead_letter.arn
}

output "target_queue_urls" {
  description = "Target queue URLs by target name."
  value       = { for name, q in aws_sqs_queue.target : name => q.url }
}

output "target_queue_arns" {
  description = "Target queue ARNs by target name."
  value       = { for name, q in aws_sqs_queue.target : name => q.arn }
}

output "worker_policy_json" {
  description = "IAM policy document for the worker's role (IRSA or instance role)."
  value       = data.aws_iam_policy_document.worker.json
}

output "replay_policy_json" {
  description = "IAM policy document for whoever runs `veltrix dlq replay`."
  value       = data.aws_iam_policy_document.replay.json
}

output "max_receive_count" {
  description = "The redrive policy's maxReceiveCount (keep the worker's retry budget below it)."
  value       = var.max_receive_count
}

output "veltrix_config" {
  description = "The [source] and [targets.*] tables of a veltrix config (`terraform output -raw veltrix_config`); add [pipeline] (dead_letter = \"dlq\") and [[rules]]."
  value = templatefile("${path.module}/veltrix.toml.tftpl", {
    source_url         = aws_sqs_queue.source.url
    dlq_url            = aws_sqs_queue.dead_letter.url
    targets            = { for name, q in aws_sqs_queue.target : name => q.url }
    endpoint_url       = var.endpoint_url
    visibility_timeout = var.visibility_timeout_seconds
  })
}
