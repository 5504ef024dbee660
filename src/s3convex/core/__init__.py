"""The domain core: what an S3 event is, what it changes on an asset, what a key means, and the
error tree. Imports nothing of this project (an import-linter contract keeps it so)."""
