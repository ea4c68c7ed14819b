"""What the simulated detector's regions truly are, on a topic of their own so that a recording keeps them.

The demo publishes one std_msgs/String on GROUND_TRUTH_TOPIC per region array, just before the array: JSON
{"stamp_ns": <the array's header stamp in ns>, "modality": "image_region" | "pointcloud_region",
"truths": {<region id>: <truth>}}, each truth a dict as training.metrics.attribute_exact_match takes it (size,
colour, shape, ... and the phrase). The node never reads it. A region is known by (stamp_ns, region id), which
is how python -m tools.replay matches a replayed description to its truth; a bag whose truths are elsewhere
can be remapped onto this topic (--remap /theirs:=/ground_truth) when they are in this format.
"""

import json

from std_msgs.msg import String

GROUND_TRUTH_TOPIC = "/ground_truth"


def truth_message(stamp_ns: int, modality: str, truths: dict[str, dict]) -> String:
    return String(data=json.dumps({"stamp_ns": stamp_ns, "modality": modality, "truths": truths}))


def parse_truths(data: str) -> tuple[str, dict[tuple[int, str], dict]]:
    """(modality, {(stamp_ns, region id): truth}) of one message's data; ValueError saying what is wrong."""
    try:
        record = json.loads(data)
        stamp_ns, modality, truths = int(record["stamp_ns"]), str(record["modality"]), record["truths"]
        return modality, {(stamp_ns, str(region)): dict(truth) for region, truth in truths.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"a {GROUND_TRUTH_TOPIC} message is not the JSON {{stamp_ns, modality, truths}} "
                         f"this topic carries ({error!r}): {data[:80]!r}") from error
