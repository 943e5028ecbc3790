variable "job_name_prefix" {
  description = "Dataflow job name prefix; the workflow appends -YYYYMMDD-HHMMSS (UTC) to it on every run."
  type        = string
  validation {
    # Dataflow job names: lower-case letters, digits and hyphens, starting with a letter.
    condition     = can(regex("^[a-z]([-a-z0-9]{0,62}[a-z0-9])?$", var.job_name_prefix))
    error_message = "job_name_prefix must be lower-case letters, digits and hyphens, start with a letter and end with a letter or digit."
  }
}

variable "template_gcs_path" {
  description = "gs:// path of the Flex Template spec written by gcloud dataflow flex-template build."
  type        = string
  validation {
    condition     = can(regex("^gs://[^/]+/.+\\.json$", var.template_gcs_path))
    error_message = "template_gcs_path must be a gs://BUCKET/PATH.json file."
  }
}

variable "sdk_container_image" {
  description = "The image built from deploy/Dockerfile; the workers must run it (it holds the predjoin package)."
  type        = string
}

variable "parameters" {
  description = "Job parameters, named as in deploy/metadata.json. The literal {date} in a value is replaced by the run's UTC date (YYYYMMDD)."
  type        = map(string)
}

variable "service_account_email" {
  description = "Service account the launcher VM and the workers run as; null for the Compute Engine default."
  type        = string
  default     = null
}

variable "temp_location" {
  description = "gs:// prefix for temporary files; null lets Dataflow choose."
  type        = string
  default     = null
}

variable "staging_location" {
  description = "gs:// prefix for staged files; null lets Dataflow choose."
  type        = string
  default     = null
}

variable "environment" {
  description = "More FlexTemplateRuntimeEnvironment fields (REST names, e.g. maxWorkers, machineType); they win over the ones above."
  type        = any
  default     = {}
}
