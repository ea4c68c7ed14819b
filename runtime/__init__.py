"""ROS-free inference: loads a bundle, preprocesses, runs the graphs and decodes text."""
from runtime.decoding import Cancelled
from runtime.describer import Describer
from runtime.description import Description

__all__ = ["Cancelled", "Describer", "Description"]
