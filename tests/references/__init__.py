"""Small reference models written after the public code whose checkpoints cnnkit imports, for the differential
tests in tests/test_import_references.py. Each module names the file and commit it follows; none imports cnnkit.
They are rewritten, not copied: same module names (so the same state-dict keys), the same padding, pooling,
shortcut and head conventions, nothing else (no weight downloads, no training-only options)."""
