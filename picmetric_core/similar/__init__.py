"""Similar photos: perceptual hashes for near-duplicates, classifier embeddings for "more like this"."""
