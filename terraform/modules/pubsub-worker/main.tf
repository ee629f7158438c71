# A Pub/Sub set for one veltrix worker: topic, subscription with dead-letter (and optional
# retry) policy, dead-letter topic with a subscription that keeps the dead letters, optional
# target topics, and the IAM bindings the worker and the Pub/Sub service agent need.

data "google_project" "this" {
  project_id = var.project
}

# Names and the rendered config, from a provider-less submodule (so tests render them offline).
module "layout" {
  source  = "./layout"
  project = var.project
  name    = var.name
  targets = var.targets
}

locals {
  worker        = "serviceAccount:${var.worker_service_account}"
  service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

# Topics are encrypted with Google-managed keys, or with var.kms_key_name (CMEK) when set.
resource "google_pubsub_topic" "source" {
  project      = var.project
  name         = module.layout.topic
  labels       = var.labels
  kms_key_name = var.kms_key_name
  depends_on   = [google_kms_crypto_key_iam_member.service_agent]
}

resource "google_pubsub_topic" "dead_letter" {
  project      = var.project
  name         = module.layout.dead_letter_topic
  labels       = var.labels
  kms_key_name = var.kms_key_name
  depends_on   = [google_kms_crypto_key_iam_member.service_agent]
}

# With CMEK, the Pub/Sub service agent encrypts and decrypts with the key; topics cannot be
# created before it may.
resource "google_kms_crypto_key_iam_member" "service_agent" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.service_agent
}

# A topic without a subscription drops what is published to it: this one keeps dead letters
# for `veltrix dlq replay --from-subscription`.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project
  name                       = module.layout.dead_letter_subscription
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention_duration
  labels                     = var.labels
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "source" {
  project                    = var.project
  name                       = module.layout.subscription
  topic                      = google_pubsub_topic.source.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  enable_message_ordering    = var.enable_message_ordering
  filter                     = var.filter
  labels                     = var.labels

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  dynamic "retry_policy" {
    for_each = var.retry_policy == null ? [] : [var.retry_policy]
    content {
      minimum_backoff = retry_policy.value.minimum_backoff
      maximum_backoff = retry_policy.value.maximum_backoff
    }
  }

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic" "target" {
  for_each     = module.layout.target_topics
  project      = var.project
  name         = each.value
  labels       = var.labels
  kms_key_name = var.kms_key_name
  depends_on   = [google_kms_crypto_key_iam_member.service_agent]
}

# The worker: consume the subscription and read its settings (preflight, attempt counting);
# publish dead letters and forwards.
resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  project      = var.project
  subscription = google_pubsub_subscription.source.name
  role         = "roles/pubsub.subscriber"
  member       = local.worker
}

resource "google_pubsub_subscription_iam_member" "worker_viewer" {
  project      = var.project
  subscription = google_pubsub_subscription.source.name
  role         = "roles/pubsub.viewer"
  member       = local.worker
}

resource "google_pubsub_topic_iam_member" "worker_dead_letter_publisher" {
  project = var.project
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.worker
}

resource "google_pubsub_topic_iam_member" "worker_target_publisher" {
  for_each = google_pubsub_topic.target
  project  = var.project
  topic    = each.value.name
  role     = "roles/pubsub.publisher"
  member   = local.worker
}

# The Pub/Sub service agent forwards poison messages to the dead-letter topic: it must publish
# there and subscribe to the source subscription, or the dead-letter policy silently does
# nothing (the binding users most often forget).
resource "google_pubsub_topic_iam_member" "service_agent_dead_letter_publisher" {
  project = var.project
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.service_agent
}

resource "google_pubsub_subscription_iam_member" "service_agent_subscriber" {
  project      = var.project
  subscription = google_pubsub_subscription.source.name
  role         = "roles/pubsub.subscriber"
  member       = local.service_agent
}
