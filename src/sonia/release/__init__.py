"""Release bundles: the manifest of every evidence file, its Ed25519 signature, the
generated checklist, role sign-offs, and verification of all of them."""
