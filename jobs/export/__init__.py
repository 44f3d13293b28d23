"""What leaves the workbench: a variant as a zip (`variant_zip`), a Hugging Face Space bundle (`space`, whose
app is `space_app`) and a deployment bundle (`deployment`: the model server copied in by `vendor`, its
Dockerfile, Kubernetes manifests and README from `deployment_files`)."""
