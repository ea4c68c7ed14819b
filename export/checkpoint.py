"""A checkpoint directory read graph by graph: the exporter loads only the weights of the graph it builds.

At the release's size (ViT-g + OPT-2.7B, 16.5 GB in fp32) the whole model and the weights of the graph being
written do not fit in 24 GB together. `CheckpointWeights` checks the directory once (config, weights' names and
shapes, tokenizer) without loading a weight, then `model(prefixes)` builds a RegionBLIP whose other weights stay
on PyTorch's meta device (no memory) and reads the prefixed ones from the safetensors file.
"""
import math
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from contract.boxes import CornerConventionError
from training.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP

SAVE_HINT = "re-save it with save_pretrained"


class CheckpointWeights:
    """A save_pretrained directory, checked on opening; ValueError naming what is missing or damaged (its tokenizer
    too, which the bundle copies: a runtime could not read a damaged one)."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        if not directory.is_dir():
            found = "is a file, not a directory" if directory.exists() else "does not exist"
            raise ValueError(f"checkpoint {directory} {found}: pass a directory written by save_pretrained")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise ValueError(f"checkpoint {directory} has no {name}: pass a directory written by save_pretrained")
        if not (directory / "tokenizer.json").is_file():
            raise ValueError(f"checkpoint {directory} has no tokenizer.json: save the model with its tokenizer "
                             "(model.save_pretrained(dir, tokenizer=...))")
        try:
            Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as error:  # the tokenizers library raises a bare Exception
            raise ValueError(f"checkpoint {directory} has a tokenizer.json that cannot be read ({error}): save the "
                             "model with its tokenizer again (model.save_pretrained(dir, tokenizer=...))") from error
        self.directory = directory
        self.config = self._read_config()
        self._shapes = self._read_shapes()
        self._check_against(self._skeleton())

    def _read_config(self) -> RegionBLIPConfig:
        try:
            return RegionBLIPConfig.load(self.directory / CONFIG_NAME)
        except CornerConventionError:  # readable, but trained for other corners: its own message says what to do
            raise
        except Exception as error:  # json, type and range errors
            raise ValueError(f"checkpoint {self.directory} has a {CONFIG_NAME} that cannot be read "
                             f"({type(error).__name__}: {error}): {SAVE_HINT}") from error

    def _read_shapes(self) -> dict[str, list[int]]:
        try:
            with safe_open(self.directory / WEIGHTS_NAME, framework="pt") as file:
                return {key: file.get_slice(key).get_shape() for key in file.keys()}
        except Exception as error:  # safetensors raises its own error types for a damaged header or size
            raise ValueError(f"checkpoint {self.directory} has a {WEIGHTS_NAME} that cannot be read "
                             f"({type(error).__name__}: {error}): {SAVE_HINT}") from error

    def fp32_bytes(self, prefixes: tuple[str, ...]) -> int:
        """Bytes of the weights under `prefixes` in fp32, as an exported graph stores them (read from the header)."""
        return 4 * sum(math.prod(shape) for key, shape in self._shapes.items() if key.startswith(prefixes))

    def _skeleton(self) -> RegionBLIP:
        """The model of the config with every weight on the meta device."""
        with torch.device("meta"):
            return RegionBLIP(RegionBLIPConfig.load(self.directory / CONFIG_NAME))  # a config of its own

    def _check_against(self, model: RegionBLIP) -> None:
        expected = model.state_dict(keep_vars=True)
        stored = {}  # tensor identity -> a key the file holds it under: tied weights are saved once
        for key, tensor in expected.items():
            if key in self._shapes:
                stored[id(tensor)] = key
        missing = [key for key, tensor in expected.items() if id(tensor) not in stored]
        unexpected = [key for key in self._shapes if key not in expected]
        wrong = [f"{key} {self._shapes[key]} vs {list(expected[key].shape)}" for key in self._shapes
                 if key in expected and list(expected[key].shape) != list(self._shapes[key])]
        if missing or unexpected or wrong:
            raise ValueError(f"checkpoint {self.directory}: {WEIGHTS_NAME} does not match its {CONFIG_NAME} "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shapes {wrong[:3]}): save "
                             "config and weights together with save_pretrained")

    def model(self, prefixes: tuple[str, ...]) -> RegionBLIP:
        """A RegionBLIP (eval mode) whose weights under `prefixes` are loaded; the others are on the meta device."""
        model = self._skeleton()
        aliases = {}  # tensor identity -> every key it has: tied weights (OPT's output layer) are saved once
        for key, tensor in model.state_dict(keep_vars=True).items():
            aliases.setdefault(id(tensor), []).append(key)
        try:
            with safe_open(self.directory / WEIGHTS_NAME, framework="pt") as file:
                state = {key: file.get_tensor(key) for key in self._shapes if key.startswith(prefixes)}
        except Exception as error:  # a file damaged after its header: truncated, or unreadable
            raise ValueError(f"checkpoint {self.directory}: {WEIGHTS_NAME} could not be read "
                             f"({type(error).__name__}: {error}): {SAVE_HINT}") from error
        model.load_state_dict(state, strict=False, assign=True)
        for keys in aliases.values():  # assign replaced one name's tensor: give it to the names it was tied to
            loaded = [key for key in keys if key in state]
            for key in [key for key in keys if key not in state] if loaded else ():
                owner, name = key.rsplit(".", 1)
                setattr(model.get_submodule(owner), name, model.get_parameter(loaded[0]))
        return model.eval()
