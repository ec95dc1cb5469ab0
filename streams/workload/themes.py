"""Visual and textual themes of interest clusters: a base photo or drawing style, a palette, words.

Pure data and cheap choices only, so building a world never touches an image library.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

RGB = tuple[int, int, int]
ThemeKind = Literal["photo", "drawing"]


@dataclass(frozen=True)
class Topic:
    """A base image (photo name or drawing style) with the words people use for it."""

    kind: ThemeKind
    source: str
    slug: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class Theme:
    """How a cluster's pins look: pins of one theme share a base, a palette and a framing."""

    kind: ThemeKind
    source: str
    palette: tuple[RGB, ...]
    focus: tuple[float, float]  # centre of the framed region, relative to the base image
    zoom: float  # side of the framed region relative to the base's shorter side (or motif scale)
    tint: float  # 0 keeps a photo's own colours; up to 1 maps it onto the palette


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _topic(kind: ThemeKind, source: str, slug: str, words: str) -> Topic:
    return Topic(kind=kind, source=source, slug=slug, words=_words(words))


# Only photos bundled inside the scikit-image wheel: the others need a network download.
TOPICS: tuple[Topic, ...] = (
    _topic("photo", "astronaut", "space-explorers",
           "astronaut spacesuit nasa mission orbit flag shuttle explorer helmet space hero"),
    _topic("photo", "rocket", "rocket-launch",
           "rocket launch countdown booster pad liftoff engine flight spacex tower smoke"),
    _topic("photo", "hubble_deep_field", "deep-sky",
           "galaxy stars cosmos nebula universe telescope deep field astrophotography night"),
    _topic("photo", "moon", "lunar-surface",
           "moon crater lunar surface regolith night sky grey astronomy full phase"),
    _topic("photo", "chelsea", "tabby-cats",
           "cat kitten tabby whiskers purr pet cute feline cozy nap ginger"),
    _topic("photo", "coffee", "coffee-break",
           "coffee latte espresso mug cafe brew barista morning cup saucer beans"),
    _topic("photo", "coins", "coin-collecting",
           "coins numismatic vintage collection currency copper silver antique rare mint"),
    _topic("photo", "retina", "eye-health",
           "retina eye fundus vision ophthalmology vessels optic medical scan health"),
    _topic("photo", "immunohistochemistry", "lab-microscopy",
           "microscopy stain tissue cells lab pathology slide biology sample science"),
    _topic("photo", "motorcycle", "motorbike-garage",
           "motorcycle motorbike garage ride biker engine chrome custom workshop wheels"),
    _topic("photo", "camera", "film-photography",
           "photographer camera tripod film monochrome analog lens portrait street classic"),
    _topic("photo", "horse", "horse-silhouettes",
           "horse silhouette equestrian stallion gallop mane ranch riding pony shape"),
    _topic("photo", "text", "hand-lettering",
           "lettering typography calligraphy font letters script handwritten sign quote ink"),
    _topic("photo", "page", "old-books",
           "book page print paper reading library novel literature vintage scan words"),
    _topic("photo", "brick", "brick-walls",
           "brick wall masonry mortar facade rustic texture urban loft exposed red"),
    _topic("photo", "grass", "lawn-garden",
           "grass lawn garden green meadow turf backyard blades landscaping field spring"),
    _topic("photo", "gravel", "stone-paths",
           "gravel stone pebbles path driveway rocks landscaping zen garden texture"),
    _topic("photo", "clock", "vintage-clocks",
           "clock time vintage antique dial hands ticking mantel retro timepiece"),
    _topic("photo", "cell", "cell-biology",
           "cell biology microscope membrane organism culture science research micro"),
    _topic("photo", "colorwheel", "colour-theory",
           "color wheel palette hue rainbow spectrum theory design complementary tones"),
    _topic("photo", "logo", "brand-design",
           "logo branding identity design mark symbol graphic emblem studio vector"),
    _topic("drawing", "geometric", "geometric-art",
           "geometric shapes abstract poster modern minimal bauhaus composition print art"),
    _topic("drawing", "gradient", "sunset-gradients",
           "gradient sunset sky dusk glow ombre wallpaper soft horizon dreamy"),
    _topic("drawing", "stripes", "striped-patterns",
           "stripes pattern lines textile fabric nautical bold print repeat"),
    _topic("drawing", "dots", "polka-dots",
           "polka dots spots pattern retro playful fabric confetti circles"),
    _topic("drawing", "waves", "wave-patterns",
           "waves ocean flow curves pattern ripple surf tide swirl"),
    _topic("drawing", "mosaic", "mosaic-tiles",
           "mosaic tiles tessellation stained glass pieces bathroom backsplash craft"),
    _topic("drawing", "marble", "marble-textures",
           "marble texture stone veins luxury countertop swirl elegant surface"),
    _topic("drawing", "checker", "checkerboard-decor",
           "checkerboard checkered squares floor retro tiles chess grid decor"),
)

# Words any pin may use; they carry no cluster signal, as in real captions.
FILLER_WORDS: tuple[str, ...] = _words(
    "ideas inspiration diy aesthetic love best easy beautiful simple home style favorite "
    "new my our this that and with for the of in on"
)

PALETTES: tuple[tuple[RGB, ...], ...] = (
    ((239, 71, 111), (255, 209, 102), (6, 214, 160), (17, 138, 178), (7, 59, 76)),
    ((38, 70, 83), (42, 157, 143), (233, 196, 106), (244, 162, 97), (231, 111, 81)),
    ((255, 190, 11), (251, 86, 7), (255, 0, 110), (131, 56, 236), (58, 134, 255)),
    ((13, 27, 42), (27, 38, 59), (65, 90, 119), (119, 141, 169), (224, 225, 221)),
    ((204, 213, 174), (233, 237, 201), (254, 250, 224), (250, 237, 205), (212, 163, 115)),
    ((0, 48, 73), (214, 40, 40), (247, 127, 0), (252, 191, 73), (234, 226, 183)),
    ((34, 87, 122), (56, 163, 165), (87, 204, 153), (128, 237, 153), (199, 249, 204)),
    ((95, 15, 64), (154, 3, 30), (251, 139, 36), (227, 100, 20), (15, 76, 92)),
    ((255, 173, 173), (255, 214, 165), (253, 255, 182), (202, 255, 191), (155, 246, 255)),
    ((43, 45, 66), (141, 153, 174), (237, 242, 244), (239, 35, 60), (217, 4, 41)),
    ((88, 129, 87), (58, 90, 64), (52, 78, 65), (163, 177, 138), (218, 215, 205)),
    ((120, 0, 0), (193, 18, 31), (253, 240, 213), (0, 48, 73), (102, 155, 188)),
)


def make_theme(topic: Topic, reuse: int, rng: random.Random) -> Theme:
    """The theme of a cluster built on `topic`; `reuse` > 0 means earlier clusters share the base.

    Reused bases get another framing and a strong palette tint so their clusters stay visually
    apart from the first one.
    """
    palette = PALETTES[rng.randrange(len(PALETTES))]
    if topic.kind == "drawing":
        return Theme(
            kind="drawing",
            source=topic.source,
            palette=palette,
            focus=(0.5, 0.5),
            zoom=rng.uniform(0.6, 1.4),
            tint=0.0,
        )
    return Theme(
        kind="photo",
        source=topic.source,
        palette=palette,
        focus=(rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)),
        zoom=rng.uniform(0.6, 0.9),
        tint=0.0 if reuse == 0 else rng.uniform(0.55, 0.85),
    )
