# The names of one worker's Pub/Sub set and the veltrix config that points at them, computed
# without any provider: the parent module names its resources from these outputs, and
# tests/terraform.rs applies this module on its own (no Google provider, no cloud) to render
# the config, load it with `veltrix check` and compare the names with deploy/kubernetes.

terraform {
  required_version = ">= 1.5"
}

variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "name" {
  description = "Base name (see the parent module's variable)."
  type        = string
}

variable "targets" {
  description = "Target names (see the parent module's variable)."
  type        = list(string)
  default     = []
}

locals {
  topic                    = var.name
  subscription             = "${var.name}-sub"
  dead_letter_topic        = "${var.name}-dlq"
  dead_letter_subscription = "${var.name}-dlq-sub"
  target_topics            = { for t in var.targets : t => "${var.name}-${t}" }
  topic_id                 = "projects/${var.project}/topics/${local.topic}"
  subscription_id          = "projects/${var.project}/subscriptions/${local.subscription}"
  dead_letter_topic_id     = "projects/${var.project}/topics/${local.dead_letter_topic}"
  target_topic_ids         = { for t, n in local.target_topics : t => "projects/${var.project}/topics/${n}" }
}

output "topic" {
  description = "Short name of the source topic."
  value       = local.topic
}

output "subscription" {
  description = "Short name of the worker's subscription."
  value       = local.subscription
}

output "subscription_id" {
  description = "Full name of the worker's subscription (projects/P/subscriptions/S), as KEDA's gcp-pubsub scaler and the worker's [source] take it."
  value       = local.subscription_id
}

output "dead_letter_topic" {
  description = "Short name of the dead-letter topic."
  value       = local.dead_letter_topic
}

output "dead_letter_subscription" {
  description = "Short name of the subscription keeping dead letters."
  value       = local.dead_letter_subscription
}

output "target_topics" {
  description = "Short names of the target topics, by target name."
  value       = local.target_topics
}

output "worker_account_id" {
  description = "A service account id for the worker: veltrix-NAME in lower case, cut to IAM's 30 characters (a NAME with characters other than letters, digits and - needs an id of its own)."
  value       = "veltrix-${substr(lower(var.name), 0, 22)}"
}

output "veltrix_config" {
  description = "The [source] and [targets.*] tables of a veltrix config for these names."
  value = templatefile("${path.module}/veltrix.toml.tftpl", {
    subscription      = local.subscription_id
    dead_letter_topic = local.dead_letter_topic_id
    targets           = local.target_topic_ids
  })
}
