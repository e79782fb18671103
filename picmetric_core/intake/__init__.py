"""Getting images in: decoding bytes within limits (``images``) and fetching URLs safely (``fetch``)."""
