"""Pictures of a run: masks over images, attention maps, PCA of patch features (PNG arrays)."""
