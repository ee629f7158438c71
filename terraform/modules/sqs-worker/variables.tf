variable "name" {
  description = "Base name: the source queue is NAME (NAME.fifo), the dead-letter queue NAME-dlq, targets NAME-TARGET."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,70}$", var.name))
    error_message = "name: 1-70 letters, digits, '-' or '_' (SQS names allow 80 characters; suffixes need the rest)."
  }
}

variable "fifo" {
  description = "Create FIFO queues (source, dead-letter queue and targets). Message groups are processed in order by the worker."
  type        = bool
  default     = false
}

variable "visibility_timeout_seconds" {
  description = "Source queue visibility timeout (0-43200). Keep it above the slowest target timeout; the worker extends leases of slow messages anyway."
  type        = number
  default     = 60
  validation {
    condition     = var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200
    error_message = "visibility_timeout_seconds must be 0-43200."
  }
}

variable "message_retention_seconds" {
  description = "Source queue retention (60-1209600)."
  type        = number
  default     = 345600
}

variable "dead_letter_retention_seconds" {
  description = "Dead-letter queue retention (60-1209600); long, so dead letters can be replayed after a fix."
  type        = number
  default     = 1209600
}

variable "max_receive_count" {
  description = "Receives before SQS itself moves a message to the dead-letter queue. Keep it above the worker's retry budget (pipeline.retry.max_attempts, default 5) so the worker dead-letters first, with a reason; `veltrix check --preflight` checks this."
  type        = number
  default     = 10
  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be 1-1000."
  }
}

variable "targets" {
  description = "Target queues to create for forward actions, by target name (e.g. [\"fraud\", \"billing\"]); each becomes NAME-TARGET and a [targets.TARGET] table in veltrix_config."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for t in var.targets : can(regex("^[A-Za-z0-9_-]{1,40}$", t)) && t != "dlq"])
    error_message = "targets: names of 1-40 letters, digits, '-' or '_'; \"dlq\" is reserved for the dead-letter target."
  }
}

variable "endpoint_url" {
  description = "Written as endpoint_url into veltrix_config (LocalStack: http://127.0.0.1:4566); null for AWS."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "ARN of a customer-managed KMS key for server-side encryption of every queue (SSE-KMS). null (the default) uses SQS-managed keys (SSE-SQS). With a key, worker_policy_json and replay_policy_json allow kms:Decrypt and kms:GenerateDataKey on it; the key's own policy must allow those roles too (and sns.amazonaws.com or other producers that send)."
  type        = string
  default     = null
  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn: the ARN of a KMS key or alias (arn:aws:kms:REGION:ACCOUNT:key/ID), or null for SQS-managed encryption."
  }
}

variable "kms_data_key_reuse_period_seconds" {
  description = "With kms_key_arn: how long SQS reuses a data key before calling KMS again (60-86400). Longer means fewer KMS requests (and costs)."
  type        = number
  default     = 300
  validation {
    condition     = var.kms_data_key_reuse_period_seconds >= 60 && var.kms_data_key_reuse_period_seconds <= 86400
    error_message = "kms_data_key_reuse_period_seconds must be 60-86400."
  }
}

variable "source_policy_json" {
  description = "Extra statements for the source queue's resource policy, as a JSON policy document (e.g. letting an SNS topic send). The module always adds a statement denying requests without TLS."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every queue."
  type        = map(string)
  default     = {}
}
