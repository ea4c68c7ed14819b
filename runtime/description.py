"""What the runtime returns for each region, image or object it describes."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Description:
    """One generated description.

    text: the decoded words, stripped, without the stop token.
    score: mean log-probability of the generated tokens (<= 0; higher is more confident).
    token_ids: the generated token ids, stop token excluded.
    timings_ms: wall times of this call's stages in milliseconds (e.g. "preprocess", "encode",
        "qformer", "decode", "total"); shared by every description of the same call, because a
        frame's features and its regions' decoding are computed together.
    problem: why this region was not described (its box is unusable), or None when it was.
    """

    text: str
    score: float
    token_ids: tuple[int, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    @classmethod
    def refused(cls, problem: str) -> "Description":
        """The place of a region that could not be described: no text, score NaN, and the reason."""
        return cls(text="", score=float("nan"), token_ids=(), problem=problem)
