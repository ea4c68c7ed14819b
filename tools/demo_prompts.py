"""What the demo's prompted regions said (tools/demo.py): the simulated detector puts a text prompt on one region of
every camera array (sim_sensors' region_prompt), and the node asks the model with it.

The default model was not trained for prompts: it continues a prompt that begins one of its captions. The demo asks
"a", every caption's first word, so that its answers ("small red square") can be scored like captions."""


def prompt_summary(regions: list[dict]) -> dict:
    """The prompted regions among these, what they were asked, and their attribute exact match."""
    prompted = [region for region in regions if region.get("prompt")]
    return {"regions": len(prompted), "prompts": sorted({region["prompt"] for region in prompted}),
            "exact_match": round(sum(r["correct"] for r in prompted) / len(prompted), 4) if prompted else None,
            "examples": sorted({f'"{r["prompt"]}" → "{r["text"]}"' for r in prompted})[:3]}


def prompt_line(summary: dict) -> str:
    """One line: how many regions were asked with a prompt, and how well they answered."""
    prompts = summary["prompts"]
    if not summary["regions"]:
        return "demo: no region carried a prompt (sim_sensors' region_prompt is empty)"
    return (f"demo: {summary['regions']} camera regions carried the prompt {', '.join(map(repr, prompts))} "
            f"(exact match {summary['exact_match']:.3f}; e.g. {'; '.join(summary['examples'])}); the default model "
            "was not trained for prompts: it continues a caption's beginning")
