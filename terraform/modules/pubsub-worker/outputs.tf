output "topic" {
  description = "Full name of the source topic (publishers send here)."
  value       = google_pubsub_topic.source.id
}

output "subscription" {
  description = "Full name of the worker's subscription."
  value       = google_pubsub_subscription.source.id
}

output "dead_letter_topic" {
  description = "Full name of the dead-letter topic (the worker's [targets.dlq])."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Full name of the subscription keeping dead letters (`veltrix dlq replay --from-subscription`)."
  value       = google_pubsub_subscription.dead_letter.id
}

output "target_topics" {
  description = "Target topics by target name."
  value       = { for name, t in google_pubsub_topic.target : name => t.id }
}

output "max_delivery_attempts" {
  description = "The dead-letter policy's max_delivery_attempts (keep the worker's retry budget below it)."
  value       = var.max_delivery_attempts
}

output "veltrix_config" {
  description = "The [source] and [targets.*] tables of a veltrix config (`terraform output -raw veltrix_config`); add [pipeline] (dead_letter = \"dlq\") and [[rules]]."
  value       = module.layout.veltrix_config
  # Rendered from names alone: wait for what it names to exist.
  depends_on = [google_pubsub_subscription.source, google_pubsub_topic.dead_letter, google_pubsub_topic.target]
}
