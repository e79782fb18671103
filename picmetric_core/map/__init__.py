"""The History map: every stored photo placed by its embedding, with clusters and a uniqueness score."""
