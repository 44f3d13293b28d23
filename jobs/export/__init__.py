"""What leaves the workbench: a variant as a zip (`variant_zip`) and a Hugging Face Space bundle (`space`, whose
app is `space_app`)."""
