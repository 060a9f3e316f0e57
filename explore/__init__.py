"""See the collection: an audit (label errors, outliers, leaks across splits) and maps."""
