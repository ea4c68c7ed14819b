"""tools/demo_prompts.py: the demo's prompted regions, counted and scored apart from its captions."""
from tools.demo_prompts import prompt_line, prompt_summary


def region(prompt: str, text: str, correct: bool) -> dict:
    return {"prompt": prompt, "text": text, "correct": correct}


def test_only_prompted_regions_are_summarized_with_their_exact_match():
    summary = prompt_summary([region("a", "large red square", True), region("", "a small red square", True),
                              region("a", "small blue cross", False), region("a", "large red square", True)])
    assert summary["regions"] == 3 and summary["prompts"] == ["a"]
    assert summary["exact_match"] == round(2 / 3, 4)
    assert summary["examples"] == ['"a" → "large red square"', '"a" → "small blue cross"']


def test_the_line_names_the_prompt_and_says_the_model_was_not_trained_for_it():
    line = prompt_line(prompt_summary([region("a", "large red square", True)]))
    assert "1 camera regions carried the prompt 'a'" in line and "exact match 1.000" in line
    assert "not trained for prompts" in line
    assert prompt_line(prompt_summary([region("", "a cube", True)])).endswith("region_prompt is empty)")
