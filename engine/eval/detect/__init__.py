"""Find the red and blue objects of an image: their colour, shape and centre.

Any image size: centres are in units of the 128 px canvas, so the 64 px and the 256 px image
of a scene give the same centres. Generated (imperfect) images too: colours are thresholded
with a tolerance (red: R above G and B by COLOR_MARGIN; background: any grey), specks far below
an object's size are ignored, and shapes are told apart by scale-free features.

Objects that do not touch the other colour are whole. OpenCV's contours (or connected
components) give each one's box and its pixel moments give area, centroid and spread; the
class comes from the box fill ratio (square 1, circle pi/4, triangle 1/2), the height of the
centroid in the box (apex-up triangle 2/3, others 1/2) and the second moments (see fit.classify).
The centre is the centroid, which is the renderer's centre for all three shapes; where a
rasterised shape's centroid sits off it (triangles, small images, sizes that are not a
multiple of 64) a template fit at the nominal size gives it exactly.

Objects that touch the other colour may be partly hidden: the dataset draws object 2 over
object 1, so about a quarter of the scenes have a red object cut by the blue one, sometimes in
two pieces, and a model may draw either on top. Same-colour pieces touching the same
other-colour object are merged, and both stacking orders are tried as hypotheses. The object on
top must be whole; the one beneath is fitted with occlusion-aware templates: OpenCV's
matchTemplate scores each placement of each shape as (object pixels covered) - (background
pixels covered) - a small penalty per covered pixel of the other colour, which counts as
unknown. The hidden part therefore costs (almost) nothing and the best placement gives the
hidden object's centre, not the biased centroid of its visible part. Placements step by one
canvas unit (sub-pixel template phases), so 64 px images are located as exactly as 128 px
ones; placements that fit equally well are averaged. Sizes near the nominal one are tried
first (edges half a pixel fatter or thinner: another renderer, a model), then 0.6x to 1.5x,
the object on top setting the size of the one beneath.

Batches (detect_batch) stack same-size images and threshold and trace them with single OpenCV
calls; only images where the colours touch take the per-image path.

The package, by layer: `base` (what a detection is; colour masks and connected components),
`fit` (shape templates, whole-object features and occlusion-aware template fits), `occlusion`
(one image: whole objects, and touching ones resolved as stacked hypotheses: `detect`) and
`batch` (stacks of same-size images: `detect_batch`).
"""

from engine.eval.detect.base import Detection, as_rgb_uint8, background_mask, color_masks
from engine.eval.detect.batch import detect_batch
from engine.eval.detect.occlusion import detect

__all__ = ["Detection", "as_rgb_uint8", "background_mask", "color_masks", "detect", "detect_batch"]
