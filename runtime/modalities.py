"""The modality names a bundle and the runtime use (training/config.py defines the same; the runtime
reads bundles without importing training, and tests/test_runtime_modalities.py holds the two equal)."""

MODALITIES = ("image", "image_region", "pointcloud", "pointcloud_region")
POINT_MODALITIES = ("pointcloud", "pointcloud_region")
REGION_MODALITIES = ("image_region", "pointcloud_region")
