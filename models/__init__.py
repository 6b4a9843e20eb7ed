"""Model manifests bundled with Ridgeline (installed as the ``ridgeline_models`` package)."""
