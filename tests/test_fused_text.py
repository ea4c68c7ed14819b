"""tools/fused_text.py: the demo's fused phrase (LiDAR size and shape, camera colour) and its score."""

from tools.fused_text import fused_line, fused_phrase, fused_region, fused_summary, fused_table_lines

RED_CUBE = {"size": "large", "colour": "red", "shape": "cube", "phrase": "a large cube left of a small cone"}


def test_size_and_shape_come_from_the_lidar_and_colour_from_the_camera():
    assert fused_phrase("a large cube", "a large red square") == "a large red cube"
    assert fused_phrase("a large cube left of a small cone", "a small blue circle") == "a large blue cube"


def test_a_camera_text_without_colour_leaves_the_phrase_without_one():
    assert fused_phrase("a small sphere", "a circle") == "a small sphere"
    assert fused_phrase("a small sphere", "") == "a small sphere"


def test_a_lidar_text_naming_no_object_fuses_to_nothing():
    assert fused_phrase("left of", "a large red square") == ""


def test_a_fused_region_is_right_only_when_size_colour_and_shape_all_match_the_truth():
    right = fused_region("a large cube", "a large red square", RED_CUBE)
    assert (right["fused"], right["truth"], right["correct"], right["colour_correct"]) == \
        ("a large red cube", "a large red cube", True, True)
    wrong_colour = fused_region("a large cube", "a large blue square", RED_CUBE)
    assert (wrong_colour["correct"], wrong_colour["colour_correct"]) == (False, False)
    wrong_shape = fused_region("a large sphere", "a large red circle", RED_CUBE)
    assert (wrong_shape["correct"], wrong_shape["colour_correct"]) == (False, True)
    assert fused_region("", "a large red square", RED_CUBE)["correct"] is False


def test_the_summary_scores_the_fused_regions_and_shows_the_first_wrong_one_among_its_examples():
    regions = [{"fused": fused_region("a large cube", "a large red square", RED_CUBE)} for _ in range(5)]
    regions.append({"fused": fused_region("a large cube", "a large green square", RED_CUBE)})
    regions.append({"text": "a large cube"})  # not in the camera's view: not fused
    summary = fused_summary(regions)
    assert (summary["lidar_regions"], summary["fused_regions"]) == (7, 6)
    assert (summary["exact_match"], summary["colour"]) == (round(5 / 6, 4), round(5 / 6, 4))
    # one line per distinct fusion (a tracked object fuses the same way every frame), the wrong one among them
    assert len(summary["examples"]) == 2 and summary["examples"][-1].endswith("truth: a large red cube ✗")
    assert summary["examples"][0] == ("lidar: a large cube | camera: a large red square | fused: a large red cube | "
                                      "truth: a large red cube ✓") == fused_line(regions[0]["fused"])
    assert fused_table_lines(summary)[0].startswith("fused (LiDAR text + camera colour): 6 of 7 LiDAR regions, "
                                                    "exact match 0.833, colour 0.833")


def test_without_fused_regions_the_summary_has_no_score_and_the_table_no_row():
    summary = fused_summary([{"text": "a large cube"}])
    assert (summary["fused_regions"], summary["exact_match"], summary["examples"]) == (0, None, [])
    assert fused_table_lines(summary) == []
