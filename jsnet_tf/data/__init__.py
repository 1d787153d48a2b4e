"""Data preparation and input pipelines (S3DIS rooms, blocks, file lists)."""
