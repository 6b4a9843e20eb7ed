"""What the edge agent and the cloud broker share: errors, settings loading,
model manifests and store, and the runtime seam. Importing it loads no model
and opens no socket."""

__version__ = "0.1.0"
