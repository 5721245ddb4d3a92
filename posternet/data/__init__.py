"""Data: the record schema and manifest, CSV + images → records, the tf.data
pipeline, augmentation, the tf.data service and synthetic posters."""
