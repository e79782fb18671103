"""The official COCO category names and ids, and darknet's older spellings of six of them.

Darknet's ``coco.names`` (which the YOLO weights are trained against, in this class order) spells
six categories the PASCAL VOC way; the COCO dataset, the old Flask API and COCO tools use the
official names, so every result speaks those.
"""

from __future__ import annotations

from dataclasses import dataclass

# darknet's spelling -> the official COCO category name.
DARKNET_RENAMES: dict[str, str] = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}


@dataclass(frozen=True)
class CocoCategory:
    """One COCO category: its official id (1-90, with gaps) and name."""

    id: int
    name: str


_OFFICIAL = (
    "1 person|2 bicycle|3 car|4 motorcycle|5 airplane|6 bus|7 train|8 truck|9 boat|10 traffic light|"
    "11 fire hydrant|13 stop sign|14 parking meter|15 bench|16 bird|17 cat|18 dog|19 horse|20 sheep|21 cow|"
    "22 elephant|23 bear|24 zebra|25 giraffe|27 backpack|28 umbrella|31 handbag|32 tie|33 suitcase|34 frisbee|"
    "35 skis|36 snowboard|37 sports ball|38 kite|39 baseball bat|40 baseball glove|41 skateboard|42 surfboard|"
    "43 tennis racket|44 bottle|46 wine glass|47 cup|48 fork|49 knife|50 spoon|51 bowl|52 banana|53 apple|"
    "54 sandwich|55 orange|56 broccoli|57 carrot|58 hot dog|59 pizza|60 donut|61 cake|62 chair|63 couch|"
    "64 potted plant|65 bed|67 dining table|70 toilet|72 tv|73 laptop|74 mouse|75 remote|76 keyboard|"
    "77 cell phone|78 microwave|79 oven|80 toaster|81 sink|82 refrigerator|84 book|85 clock|86 vase|"
    "87 scissors|88 teddy bear|89 hair drier|90 toothbrush"
)

# The 80 categories in the detector's class order (class id i is COCO_CATEGORIES[i]).
COCO_CATEGORIES: tuple[CocoCategory, ...] = tuple(
    CocoCategory(int(number), name) for number, name in (item.split(" ", 1) for item in _OFFICIAL.split("|"))
)
COCO_IDS: dict[str, int] = {category.name: category.id for category in COCO_CATEGORIES}


def official_name(label: str) -> str:
    """The official COCO name for a darknet label (unchanged when it already is one).

    >>> official_name("tvmonitor"), official_name("dog")
    ('tv', 'dog')
    """
    return DARKNET_RENAMES.get(label, label)
