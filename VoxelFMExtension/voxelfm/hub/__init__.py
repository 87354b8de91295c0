"""Models by name: the registry (Resources/models.json), Hugging Face downloads, bundled resources."""
