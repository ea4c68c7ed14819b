"""ROS-free inference: loads a bundle, preprocesses, runs the graphs and decodes text."""
