"""The bundle manifest reads back what was written, and refuses a field that is missing, unknown or mistyped."""
import dataclasses
import json

import pytest

from contract.generation import GenerationSettings
from contract.manifest import (FORMAT_VERSION, GraphSpec, LanguageModelLayout, Manifest, ManifestError, Preprocess,
                               Source, TensorSpec)


def manifest() -> Manifest:
    return Manifest(
        format=FORMAT_VERSION, model={"num_query_tokens": 4}, modalities=["image", "image_region"],
        preprocess=Preprocess(image_size=32, object_num_points=256, scene_num_points=512),
        generation=GenerationSettings(bos_token_id=2, eos_token_id=7, pad_token_id=1, max_new_tokens=9),
        llm=LanguageModelLayout(stacked=True, adapters=["image_region"], adapter_ids={"image": 1, "image_region": 0},
                                num_layers=2, num_heads=2, head_dim=8),
        graphs={"vision": GraphSpec(file="vision.onnx",
                                    inputs=[TensorSpec("pixel_values", ["batch", 3, 32, 32], "float32")],
                                    outputs=[TensorSpec("image_features", ["batch", 17, 16], "float32")])},
        precision="fp32", exporter={"opset": 18}, source=Source(model_sha256="ab" * 32, checkpoint="../ckpt"),
        files={"vision.onnx": "cd" * 32})


def test_a_manifest_reads_back_equal_to_what_was_written():
    written = manifest()
    read = Manifest.from_json(written.to_json())
    assert read == written
    assert read.graphs["vision"].inputs[0].dynamic_axes == {0: "batch"}
    assert read.llm.past_names == ["past_key_0", "past_value_0", "past_key_1", "past_value_1"]


def edited(change) -> str:
    data = json.loads(manifest().to_json())
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("llm"), r"manifest has missing fields \['llm'\]"),
    (lambda d: d.update(image_mean=[0.5]), r"manifest has unknown fields \['image_mean'\]"),
    (lambda d: d["preprocess"].pop("image_size"), r"manifest.preprocess has missing fields \['image_size'\]"),
    (lambda d: d["graphs"]["vision"]["inputs"][0].update(layout="nchw"),
     r"manifest.graphs.vision.inputs\[0\] has unknown fields \['layout'\]"),
    (lambda d: d["llm"].update(num_layers="2"), r"manifest.llm.num_layers should be int, found '2'"),
    (lambda d: d["llm"].update(stacked=1), r"manifest.llm.stacked should be bool"),
    (lambda d: d["generation"].update(num_beams=0), r"manifest.generation: num_beams is 0"),
    (lambda d: d.update(format=1), "format 1, this runtime reads format 2"),
    (lambda d: d.update(format="1"), r"manifest format is the string '1': it must be the integer 2, the format this "
                                     "runtime reads"),
    (lambda d: d.update(format=2.0), r"manifest format is the number 2.0: it must be the integer 2"),
    (lambda d: d.pop("format"), r"manifest format is missing: it must be the integer 2"),
    (lambda d: d.pop("graphs"), r"manifest has missing fields \['graphs'\]"),
    (lambda d: d.pop("generation"), r"manifest has missing fields \['generation'\]"),
])
def test_a_bad_manifest_is_refused_naming_the_field_and_the_fix(change, message):
    with pytest.raises(ManifestError, match=message) as error:
        Manifest.from_json(edited(change))
    assert "re-export the bundle with python -m export.onnx" in str(error.value)


def test_the_checkpoint_reference_is_optional():
    data = json.loads(manifest().to_json())
    del data["source"]["checkpoint"]
    assert Manifest.from_json(json.dumps(data)).source.checkpoint is None


def test_not_json_is_refused():
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_json("{")
    with pytest.raises(ManifestError, match="a JSON list, not an object"):
        Manifest.from_json("[]")


def test_settings_round_trip_through_dataclasses_asdict():
    assert dataclasses.asdict(manifest())["generation"]["max_new_tokens"] == 9
