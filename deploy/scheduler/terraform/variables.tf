variable "project" {
  description = "Project that runs the Dataflow job, the workflow and the scheduler job."
  type        = string
}

variable "region" {
  description = "Region of the Dataflow job and of the workflow, e.g. europe-west1."
  type        = string
}

variable "scheduler_region" {
  description = "Region of the Cloud Scheduler job, if it is not available in var.region."
  type        = string
  default     = null
}

variable "name" {
  description = "Name of the workflow and of the scheduler job."
  type        = string
  default     = "predjoin"
}

variable "schedule" {
  description = "Cron schedule of the runs, in var.time_zone. With incremental=true each run joins every batch prediction not joined yet."
  type        = string
  default     = "0 6 * * *"
}

variable "max_run_seconds" {
  description = "The workflow cancels a job still running this long after the execution started, and fails."
  type        = number
  default     = 21600
}

variable "time_zone" {
  description = "Time zone of var.schedule (tz database name)."
  type        = string
  default     = "Etc/UTC"
}

variable "template_gcs_path" {
  description = "gs:// path of the Flex Template spec written by gcloud dataflow flex-template build."
  type        = string
}

variable "sdk_container_image" {
  description = "The image built from deploy/Dockerfile, used by the workers too."
  type        = string
}

variable "job_name_prefix" {
  description = "Dataflow job name prefix; each run appends -YYYYMMDD-HHMMSS (UTC)."
  type        = string
  default     = "predjoin"
}

variable "parameters" {
  description = "Job parameters named as in deploy/metadata.json; {date} in a value becomes the run's UTC date (YYYYMMDD)."
  type        = map(string)
}

variable "worker_service_account" {
  description = "Email of the existing service account the launcher VM and workers run as (needs roles/dataflow.worker and access to the data)."
  type        = string
}

variable "temp_location" {
  description = "gs:// prefix for Dataflow temporary files."
  type        = string
  default     = null
}

variable "staging_location" {
  description = "gs:// prefix for Dataflow staged files."
  type        = string
  default     = null
}

variable "environment" {
  description = "More FlexTemplateRuntimeEnvironment fields (REST names, e.g. maxWorkers, machineType)."
  type        = any
  default     = {}
}

variable "orchestrator_account_id" {
  description = "account_id of the service account created for the scheduler and the workflow."
  type        = string
  default     = "predjoin-orchestrator"
}
