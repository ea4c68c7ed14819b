"""The default tokenizer: OPT conventions (</s> BOS/EOS, <pad>, <unk>, "\\n" as its own token), lossless on captions."""

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from training.data.synthetic_images import SyntheticImageDataset
from training.data.synthetic_points import SyntheticPointDataset
from training.tokenizer import default_tokenizer, load_tokenizer, newline_token_id, save_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return default_tokenizer()


def test_special_tokens_have_opt_ids(tokenizer):
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert tokenizer.bos_token == tokenizer.eos_token == "</s>"
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (1, 3)


def test_newline_is_a_single_token_of_its_own(tokenizer):
    newline = newline_token_id(tokenizer)
    ids = tokenizer("a small cube\n")["input_ids"]
    assert ids[-1] == newline and tokenizer.convert_ids_to_tokens(newline) == "Ċ"
    assert newline not in tokenizer("a small cube")["input_ids"]


def test_encoding_starts_with_bos_like_opt(tokenizer):
    assert tokenizer("a large red circle")["input_ids"][0] == tokenizer.bos_token_id


def test_synthetic_captions_round_trip_with_the_stop_token(tokenizer):
    captions = [SyntheticImageDataset("image", split="eval").caption(i) for i in range(20)]
    captions += [SyntheticPointDataset("pointcloud_region", split="eval").caption(i) for i in range(20)]
    for caption in captions:
        ids = tokenizer(caption + "\n")["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == caption + "\n"


def test_attribute_words_are_single_tokens(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a large red circle left of a small cone")["input_ids"])
    assert tokens == ["</s>", "a", "Ġlarge", "Ġred", "Ġcircle", "Ġleft", "Ġof", "Ġa", "Ġsmall", "Ġcone"]


def test_unseen_text_is_lower_cased_and_still_lossless(tokenizer):
    ids = tokenizer("The Man riding a horse, 2 legs!")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the man riding a horse, 2 legs!"
    assert tokenizer.unk_token_id not in ids


def test_default_vocabulary_is_small(tokenizer):
    assert 300 < len(tokenizer) < 1024


def test_training_is_deterministic():
    corpus = [SyntheticImageDataset("image_region").caption(i) for i in range(200)]
    assert train_tokenizer(corpus).get_vocab() == train_tokenizer(corpus).get_vocab()


def test_saved_tokenizer_loads_in_transformers_and_tokenizers_alike(tokenizer, tmp_path):
    path = save_tokenizer(tokenizer, tmp_path)
    caption = "a small blue square and a large green cross\n"
    expected = tokenizer(caption)["input_ids"]
    assert load_tokenizer(tmp_path)(caption)["input_ids"] == expected
    assert AutoTokenizer.from_pretrained(tmp_path)(caption)["input_ids"] == expected
    assert Tokenizer.from_file(str(path)).encode(caption).ids == expected  # what the runtime reads


def test_batches_pad_on_the_right_with_pad_id(tokenizer):
    batch = tokenizer(["a cube\n", "a large red circle\n"], padding=True)
    assert batch["input_ids"][0][-1] == 1 and batch["attention_mask"][0][-1] == 0


def test_loading_from_an_empty_directory_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="save one with training.tokenizer.save_tokenizer"):
        load_tokenizer(tmp_path)
