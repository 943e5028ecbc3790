output "launch_request" {
  description = "The launch request body the scheduler passes to the workflow."
  value       = module.launch_body.request
}

output "workflow_id" {
  description = "The workflow; run it by hand with gcloud workflows run."
  value       = google_workflows_workflow.predjoin.id
}

output "scheduler_job_id" {
  description = "The Cloud Scheduler job; trigger it with gcloud scheduler jobs run."
  value       = google_cloud_scheduler_job.predjoin.id
}
