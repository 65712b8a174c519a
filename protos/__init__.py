"""Cross-process contracts as .proto files with their generated Python (regenerate: scripts/gen_protos)."""
