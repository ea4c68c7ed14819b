"""Developer tools (benchmarks, the demo, simulated sensors, the MCAP recorder): they may import every layer; runtime/ and regionblip_ros/ never import tools/."""
