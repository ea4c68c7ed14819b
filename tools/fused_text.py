"""The demo's fused descriptions: one phrase from a LiDAR region's text and the camera's text of its projection.

The region_describer only carries both texts (RegionDescription.text and .camera_text). Composing them into one
phrase depends on the synthetic scenes' vocabulary, so it lives here, beside the demo: size and shape as the LiDAR
names them (a point cloud measures size and sees the 3-D shape), colour as the camera names it (a point cloud has
none): "a large cube" + "a large red square" -> "a large red cube". A fused phrase is right when its size, colour
and shape all equal the object's truth.
"""

from training.data.vocabulary import object_phrase, parse_objects

FUSED_KEYS = ("size", "colour", "shape")
EXAMPLES = 4  # example lines in the summary


def fused_phrase(lidar_text: str, camera_text: str) -> str:
    """The first object the LiDAR text names, with the colour of the first the camera text names; '' when the
    LiDAR text names no object."""
    lidar, camera = parse_objects(lidar_text), parse_objects(camera_text)
    if not lidar:
        return ""
    colour = camera[0].get("colour") if camera else None
    return object_phrase(lidar[0]["shape"], lidar[0].get("size"), colour)


def fused_region(lidar_text: str, camera_text: str, truth: dict) -> dict:
    """One fused region as the demo records it: both texts, the fused phrase, the truth's phrase, and whether the
    fused phrase is right as a whole and in its colour."""
    fused = fused_phrase(lidar_text, camera_text)
    parsed = parse_objects(fused)
    named = {key: parsed[0].get(key) for key in FUSED_KEYS} if parsed else dict.fromkeys(FUSED_KEYS)
    expected = {key: truth[key] for key in FUSED_KEYS}
    return {"lidar": lidar_text, "camera": camera_text, "fused": fused,
            "truth": object_phrase(truth["shape"], truth["size"], truth["colour"]),
            "correct": named == expected, "colour_correct": named["colour"] == expected["colour"]}


def fused_line(record: dict) -> str:
    """'lidar: a large cube | camera: a large red square | fused: a large red cube | truth: a large red cube ✓'."""
    return (f'lidar: {record["lidar"]} | camera: {record["camera"]} | fused: {record["fused"]} | '
            f'truth: {record["truth"]} {"✓" if record["correct"] else "✗"}')


def fused_summary(lidar_regions: list[dict]) -> dict:
    """Over the LiDAR regions the demo scored (each with a 'fused' record where the camera described it): how many
    were fused, the fused phrases' exact match and colour accuracy, and a few example lines (the first distinct ones,
    and the first wrong one if it is not among them)."""
    fused = [region["fused"] for region in lidar_regions if region.get("fused")]
    distinct = list({fused_line(record): record for record in fused}.values())  # a tracked object fuses each frame
    examples = distinct[:EXAMPLES]
    wrong = next((r for r in fused if not r["correct"]), None)
    if wrong is not None and wrong not in examples:
        examples = examples[:EXAMPLES - 1] + [wrong]
    return {
        "lidar_regions": len(lidar_regions), "fused_regions": len(fused),
        "exact_match": round(sum(r["correct"] for r in fused) / len(fused), 4) if fused else None,
        "colour": round(sum(r["colour_correct"] for r in fused) / len(fused), 4) if fused else None,
        "examples": [fused_line(r) for r in examples],
    }


def fused_suffix(record: dict | None) -> str:
    """What a demo frame line adds for a fused region: ' + camera "a large red square" → "a large red cube" ✓'."""
    if record is None:
        return ""
    return (f' + camera "{record["camera"]}" → "{record["fused"]}" '
            + ("✓" if record["correct"] else f'✗ ({record["truth"]})'))


def fused_table_lines(summary: dict) -> list[str]:
    """The demo summary table's fused row and example lines; none when nothing was fused."""
    if not summary["fused_regions"]:
        return []
    return [f"fused (LiDAR text + camera colour): {summary['fused_regions']} of {summary['lidar_regions']} LiDAR "
            f"regions, exact match {summary['exact_match']:.3f}, colour {summary['colour']:.3f}",
            *("  " + line for line in summary["examples"])]
