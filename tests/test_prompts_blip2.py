"""BLIP-2 prompt parity: for the image modality, describing with a text prompt gives the tokens transformers'
Blip2ForConditionalGeneration.generate gives for the same prompt, put in as transformers' own Blip2Processor puts it
(the image tokens that generate replaces with the soft prompt, then BOS and the prompt, left-padded in a batch)."""
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

from runtime import Describer, preprocess
from tests.describer_inputs import IMAGE
from tests.tiny_checkpoint import _tokenizer
from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP
from training.tokenizer import load_tokenizer

QUESTION = "Question: what colour is it? Answer:"
IMAGES = [IMAGE, IMAGE[::-1].copy()]
MAX_NEW_TOKENS = 10


@pytest.fixture(scope="module")
def blip2(tmp_path_factory):
    """A tiny random transformers BLIP-2 over the default tokenizer, plus the "<image>" token its processor adds,
    and that model converted to a RegionBLIP checkpoint whose stop token is one the model generates early."""
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    tiny = RegionBLIPConfig.preset("tiny")
    text = dict(tiny.text, model_type="opt", vocab_size=len(tokenizer) + 1, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(vision_config=tiny.vision, qformer_config=tiny.qformer, text_config=text,
                         num_query_tokens=tiny.num_query_tokens, image_token_index=len(tokenizer))
    reference = Blip2ForConditionalGeneration(config).eval()
    directory = tmp_path_factory.mktemp("blip2")
    reference.save_pretrained(directory)
    processor = blip2_processor(directory, tokenizer)
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == config.image_token_index
    # The stop token: the third token the model generates for the question, so that decoding stops early.
    stop = int(generate(reference, processor, [QUESTION], IMAGES[:1], eos=tokenizer.pad_token_id)[0, 2])
    points = {k: getattr(tiny, k) for k in ("point_num_group", "point_group_size", "point_pointnet_width",
                                            "point_trans_dim", "point_depth", "point_heads")}
    checkpoint = tmp_path_factory.mktemp("regionblip")
    RegionBLIP.from_blip2(directory, newline_token_id=stop, **points).save_pretrained(checkpoint, tokenizer=tokenizer)
    return reference, processor, checkpoint, stop


def blip2_processor(directory, tokenizer) -> Blip2Processor:
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tokenizer.save_pretrained(directory)
    text_tokenizer = load_tokenizer(directory)  # a copy: the processor adds its "<image>" token to it
    text_tokenizer.padding_side = "left"  # for generation, as BLIP-2's examples batch prompts
    return Blip2Processor(image_processor=BlipImageProcessorPil(), tokenizer=text_tokenizer,
                          num_query_tokens=RegionBLIPConfig.preset("tiny").num_query_tokens)


def generate(reference, processor, prompts, images, eos, **settings) -> torch.Tensor:
    """transformers' new tokens (R, T) for `prompts`, on the pixels our preprocessing gives the images."""
    inputs = processor(images=[Image.fromarray(image) for image in images], text=prompts, return_tensors="pt",
                       padding=True)
    pixels = torch.from_numpy(np.stack([preprocess.preprocess_image(image, 32) for image in images]))
    with torch.no_grad():
        out = reference.generate(pixel_values=pixels, input_ids=inputs["input_ids"],
                                 attention_mask=inputs["attention_mask"], do_sample=False, eos_token_id=eos,
                                 pad_token_id=processor.tokenizer.pad_token_id, max_new_tokens=MAX_NEW_TOKENS,
                                 **settings)
    return out[:, inputs["input_ids"].shape[1]:]


def before_stop(row: list[int], stop: int) -> tuple[int, ...]:
    return tuple(row[:row.index(stop)] if stop in row else row)


@pytest.fixture(scope="module")
def describers(blip2, tmp_path_factory):
    from export.onnx import main

    _, _, checkpoint, _ = blip2
    bundle = tmp_path_factory.mktemp("bundle") / "image"
    assert main(["--ckpt", str(checkpoint), "--out", str(bundle), "--modalities", "image"]) == 0
    return {"onnxruntime": Describer.from_bundle(bundle), "torch": Describer.from_checkpoint(checkpoint),
            "torch static": Describer.from_checkpoint(checkpoint, decoder="static")}


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "3 beams"])
@pytest.mark.parametrize("prompts", [[QUESTION], [QUESTION, "what shape?"], ["", "a"]],
                         ids=["one prompt", "two lengths, left-padded", "none and one"])
@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "torch static"])
def test_describing_an_image_with_a_prompt_gives_transformers_blip2_tokens(blip2, describers, backend, prompts,
                                                                           num_beams):
    reference, processor, _, stop = blip2
    images = IMAGES[:len(prompts)]
    expected = generate(reference, processor, prompts, images, eos=stop, num_beams=num_beams, min_new_tokens=1)
    describer = describers[backend]
    describer.configure(num_beams=num_beams, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=1)
    ours = describer.describe_images(images, prompts=prompts)
    assert [d.token_ids for d in ours] == [before_stop(row, stop) for row in expected.tolist()]


def test_the_parity_check_sees_decoding_stop_early(blip2, describers):
    _, _, _, stop = blip2
    describer = describers["onnxruntime"]
    describer.configure(num_beams=1, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=0)
    assert len(describer.describe_images(IMAGES[:1], prompts=[QUESTION])[0].token_ids) == 2
