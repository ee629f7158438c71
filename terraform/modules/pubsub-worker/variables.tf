variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "name" {
  description = "Base name: topic NAME, subscription NAME-sub, dead-letter topic NAME-dlq (+ subscription NAME-dlq-sub), targets NAME-TARGET."
  type        = string
  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9._~+%-]{2,200}$", var.name))
    error_message = "name: 3-200 characters, starting with a letter (Pub/Sub resource name rules)."
  }
}

variable "worker_service_account" {
  description = "Email of the worker's service account (e.g. bound to its Kubernetes service account through workload identity)."
  type        = string
}

variable "ack_deadline_seconds" {
  description = "Subscription ack deadline (10-600). Keep it above the slowest target timeout; the worker keeps leases of slow messages alive anyway."
  type        = number
  default     = 60
  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be 10-600."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries before Pub/Sub itself moves a message to the dead-letter topic (5-100). Keep it above the worker's retry budget (pipeline.retry.max_attempts, default 5) so the worker dead-letters first, with a reason."
  type        = number
  default     = 10
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be 5-100."
  }
}

variable "retry_policy" {
  description = "Optional subscription retry policy (e.g. { minimum_backoff = \"1s\", maximum_backoff = \"60s\" }). Its backoff adds to the worker's own, so null (redeliver at once) is the usual choice."
  type = object({
    minimum_backoff = string
    maximum_backoff = string
  })
  default = null
}

variable "enable_message_ordering" {
  description = "Deliver messages with the same ordering key in order (the worker keeps that order)."
  type        = bool
  default     = false
}

variable "filter" {
  description = "Optional subscription filter (Pub/Sub filter syntax on attributes); empty = every message."
  type        = string
  default     = ""
}

variable "message_retention_duration" {
  description = "How long unacked messages are kept on the subscriptions (e.g. \"604800s\")."
  type        = string
  default     = "604800s"
}

variable "dead_letter_retention_duration" {
  description = "How long the dead-letter subscription keeps dead letters (600s-2678400s, i.e. up to 31 days); long, so they can be replayed after a fix."
  type        = string
  default     = "604800s"
  validation {
    condition     = can(regex("^[0-9]+s$", var.dead_letter_retention_duration)) && try(tonumber(trimsuffix(var.dead_letter_retention_duration, "s")) >= 600 && tonumber(trimsuffix(var.dead_letter_retention_duration, "s")) <= 2678400, false)
    error_message = "dead_letter_retention_duration: seconds with an s suffix, 600s-2678400s (e.g. \"1209600s\" for 14 days)."
  }
}

variable "kms_key_name" {
  description = "A Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) to encrypt the topics with (CMEK); null (the default) uses Google-managed keys. The module grants the Pub/Sub service agent roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  type        = string
  default     = null
}

variable "targets" {
  description = "Target topics to create for forward actions, by target name; each becomes NAME-TARGET and a [targets.TARGET] table in veltrix_config."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for t in var.targets : can(regex("^[A-Za-z0-9_-]{1,60}$", t)) && t != "dlq"])
    error_message = "targets: names of 1-60 letters, digits, '-' or '_'; \"dlq\" is reserved."
  }
}

variable "labels" {
  description = "Labels for every topic and subscription."
  type        = map(string)
  default     = {}
}
