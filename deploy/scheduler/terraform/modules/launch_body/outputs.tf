output "request" {
  description = "LaunchFlexTemplateRequest body; the workflow suffixes jobName and fills in {date}."
  value       = local.request

  precondition {
    condition     = length(local.undeclared) == 0
    error_message = "Parameters not declared in deploy/metadata.json: ${join(", ", local.undeclared)}."
  }
  precondition {
    condition     = length(local.missing) == 0
    error_message = "Required parameters missing: ${join(", ", local.missing)}."
  }
  precondition {
    condition     = length(local.mismatched) == 0
    error_message = "Parameters whose value does not match the regexes in deploy/metadata.json: ${join(", ", local.mismatched)}."
  }
}
