# The pubsub-worker module on a real Google Cloud project, with a service account for the
# worker bound to its Kubernetes service account through workload identity. Credentials come
# from Application Default Credentials.
#
#   terraform init && terraform apply -var project=my-project
#   terraform output -raw veltrix_config > queues.toml

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "name" {
  description = "Base name of the topics and subscriptions."
  type        = string
  default     = "orders"
}

variable "targets" {
  description = "Target topics for forward actions, by target name."
  type        = list(string)
  default     = ["fraud", "billing"]
}

variable "kubernetes_service_account" {
  description = "The worker's Kubernetes service account, NAMESPACE/NAME (workload identity)."
  type        = string
  default     = "veltrix/veltrix-orders"
}

provider "google" {
  project = var.project
}

# The module's names, computed without a provider (also what tests/terraform.rs renders).
module "names" {
  source  = "../../modules/pubsub-worker/layout"
  project = var.project
  name    = var.name
  targets = var.targets
}

resource "google_service_account" "worker" {
  account_id   = module.names.worker_account_id
  display_name = "veltrix worker for ${var.name}"
}

resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.kubernetes_service_account}]"
}

module "worker" {
  source                 = "../../modules/pubsub-worker"
  project                = var.project
  name                   = var.name
  worker_service_account = google_service_account.worker.email
  targets                = var.targets
  max_delivery_attempts  = 10
}

output "veltrix_config" {
  value = module.worker.veltrix_config
}

output "worker_service_account" {
  description = "Annotate the Kubernetes service account with iam.gke.io/gcp-service-account = this."
  value       = google_service_account.worker.email
}
