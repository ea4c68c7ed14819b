"""RViz markers for described 3D regions: the description as text floating at each region's centre.

2D regions get no markers: without the camera's intrinsics and depth a pixel box has no place in 3D, and
annotated_image already shows them where they are.
"""

from regionblip_msgs.msg import RegionDescriptionArray
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

NAMESPACE = "region_descriptions"
TEXT_HEIGHT_M = 0.25
TEXT_COLOUR = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)


def description_markers(descriptions: RegionDescriptionArray) -> MarkerArray:
    """A DELETEALL (clearing the previous frame's texts) then one TEXT_VIEW_FACING per 3D region."""
    markers = [Marker(header=descriptions.header, ns=NAMESPACE, action=Marker.DELETEALL)]
    for index, description in enumerate(descriptions.descriptions):
        if description.modality != "pointcloud_region":
            continue
        marker = Marker(header=descriptions.header, ns=NAMESPACE, id=index, type=Marker.TEXT_VIEW_FACING,
                        action=Marker.ADD, color=TEXT_COLOUR)
        marker.pose.position = description.region_3d.center.position
        marker.pose.orientation.w = 1.0
        marker.scale.z = TEXT_HEIGHT_M
        marker.text = f"{description.label}: {description.text}" if description.label else description.text
        markers.append(marker)
    return MarkerArray(markers=markers)
