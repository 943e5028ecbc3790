# Builds the body of a projects.locations.flexTemplates.launch request for predjoin and checks
# its parameters against deploy/metadata.json. No provider: it can be planned and applied
# offline, which is how tests/test_deploy.py renders deploy/scheduler/launch_body.json.

locals {
  metadata = jsondecode(file("${path.module}/../../../../metadata.json"))
  regexes  = { for p in local.metadata.parameters : p.name => lookup(p, "regexes", []) }
  required = [for p in local.metadata.parameters : p.name if !lookup(p, "isOptional", false)]

  undeclared = sort(tolist(setsubtract(keys(var.parameters), keys(local.regexes))))
  missing    = sort(tolist(setsubtract(local.required, keys(var.parameters))))
  # The workflow replaces {date} at run time, so values are checked with a sample date in its place.
  mismatched = sort([
    for name, value in var.parameters : name
    if !alltrue([for r in lookup(local.regexes, name, []) : can(regex(r, replace(value, "{date}", "20250101")))])
  ])

  environment = merge(
    { sdkContainerImage = var.sdk_container_image },
    var.service_account_email == null ? {} : { serviceAccountEmail = var.service_account_email },
    var.temp_location == null ? {} : { tempLocation = var.temp_location },
    var.staging_location == null ? {} : { stagingLocation = var.staging_location },
    var.environment,
  )

  request = {
    launchParameter = {
      jobName              = var.job_name_prefix
      containerSpecGcsPath = var.template_gcs_path
      parameters           = var.parameters
      environment          = local.environment
    }
  }
}
