"""ROS 2 nodes that turn camera/LiDAR frames and regions of interest into descriptions."""
