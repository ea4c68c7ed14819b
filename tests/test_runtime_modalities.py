"""The runtime's modality names are training's: a bundle means the same thing on both sides."""
from runtime import modalities
from training import config


def test_the_runtime_names_the_same_modalities_as_training():
    assert modalities.MODALITIES == config.MODALITIES
    assert modalities.POINT_MODALITIES == config.POINT_MODALITIES
    assert modalities.REGION_MODALITIES == config.REGION_MODALITIES
