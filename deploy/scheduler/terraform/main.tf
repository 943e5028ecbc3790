# Daily (var.schedule) run of the predjoin Flex Template:
#
#   Cloud Scheduler --POST executions--> Cloud Workflows (../workflow.yaml) --launch--> Dataflow
#
# Cloud Scheduler sends a fixed body, but Dataflow job names should differ per run. The
# workflow therefore appends -YYYYMMDD-HHMMSS to jobName, replaces {date} in parameter values,
# launches the template and waits for the job, so that a failed Dataflow job is a failed
# workflow execution. The example parameters (terraform.tfvars.example) run incrementally
# (incremental = "true"): each run joins every batch prediction not joined yet, each exactly
# once, so no parameter has to name the day's batch prediction.

module "launch_body" {
  source = "./modules/launch_body"

  job_name_prefix       = var.job_name_prefix
  template_gcs_path     = var.template_gcs_path
  sdk_container_image   = var.sdk_container_image
  parameters            = var.parameters
  service_account_email = var.worker_service_account
  temp_location         = var.temp_location
  staging_location      = var.staging_location
  environment           = var.environment
}

resource "google_service_account" "orchestrator" {
  account_id   = var.orchestrator_account_id
  display_name = "predjoin scheduler and workflow"
}

locals {
  orchestrator = "serviceAccount:${google_service_account.orchestrator.email}"
}

# The scheduler job starts workflow executions as the orchestrator.
resource "google_project_iam_member" "orchestrator_invokes_workflows" {
  project = var.project
  role    = "roles/workflows.invoker"
  member  = local.orchestrator
}

# The workflow launches and watches Dataflow jobs as the orchestrator.
resource "google_project_iam_member" "orchestrator_develops_dataflow" {
  project = var.project
  role    = "roles/dataflow.developer"
  member  = local.orchestrator
}

resource "google_project_iam_member" "orchestrator_writes_logs" {
  project = var.project
  role    = "roles/logging.logWriter"
  member  = local.orchestrator
}

# Launching a job that runs as the worker service account needs actAs on that account.
resource "google_service_account_iam_member" "orchestrator_acts_as_worker" {
  service_account_id = "projects/${var.project}/serviceAccounts/${var.worker_service_account}"
  role               = "roles/iam.serviceAccountUser"
  member             = local.orchestrator
}

resource "google_workflows_workflow" "predjoin" {
  name            = var.name
  region          = var.region
  description     = "Launches the predjoin Flex Template with a per-run job name and waits for the job."
  service_account = google_service_account.orchestrator.id
  source_contents = file("${path.module}/../workflow.yaml")
  call_log_level  = "LOG_ERRORS_ONLY"
  user_env_vars = {
    DATAFLOW_REGION          = var.region
    PREDJOIN_MAX_RUN_SECONDS = tostring(var.max_run_seconds)
  }
}

resource "google_cloud_scheduler_job" "predjoin" {
  name             = var.name
  region           = coalesce(var.scheduler_region, var.region)
  description      = "Starts the ${var.name} workflow, which launches the predjoin Flex Template."
  schedule         = var.schedule
  time_zone        = var.time_zone
  attempt_deadline = "60s"

  # A retried POST would start a second workflow execution, hence a second Dataflow job.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://workflowexecutions.googleapis.com/v1/${google_workflows_workflow.predjoin.id}/executions"
    headers = {
      "Content-Type" = "application/json"
    }
    # The execution argument is the launch request body, as a JSON string.
    body = base64encode(jsonencode({
      argument = jsonencode(module.launch_body.request)
    }))
    oauth_token {
      service_account_email = google_service_account.orchestrator.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_iam_member.orchestrator_invokes_workflows]
}
