"""One blueprint a file: health, collections (items, thumbnails), search, embed, classifiers."""
