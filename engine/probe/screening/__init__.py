"""Weight-space screening: find relation heads from the weights alone, without sampling.

For every layer's cross-attention (``block.attn2``) and every head:

- **queries** are the grid's 2D sin-cos positional features, exactly the ``[N, D]`` table
  ``transformer.pos_embed`` (diffusers' ``PatchEmbed``) adds to the patch tokens (its
  ``pos_embed`` buffer, or ``get_2d_sincos_pos_embed`` with the module's ``base_size`` and
  ``interpolation_scale`` when the buffer's grid differs), passed through that layer's ``to_q``
  (weight and bias);
- **keys** are each relation word's embedding after ``transformer.caption_projection``, passed
  through ``to_k`` (weight only, see below);
- the **map** of a head and a relation word is ``q(p) . k(w) * attn.scale`` on the token grid
  (8x8 here; row 0 is the top of the image, so y grows downward).

Approximation (the method's, as in the paper): in PixArt blocks (``norm_type="ada_norm_single"``)
the cross-attention reads the residual stream *without* a norm or adaLN modulation (diffusers'
``BasicTransformerBlock``: "For PixArt norm2 isn't applied here"), so its real query input is
``patch_embed(x) + pos + (outputs of earlier attention and MLP sublayers)``. Screening keeps
only the ``pos`` term: it asks what the head's query/key weights do with *position*, ignoring
image content, noise level and everything earlier layers write. The key bias is dropped: it adds
``q(p) . b_k`` to the logit of every text token at position ``p`` alike, which the softmax over
text tokens cancels. The query bias adds a constant to a word's whole map, which the metrics
below remove by centring.

**Relation word embeddings** come from template captions, so contextual encoders (``minilm``,
``t5:``) and position-aware ones (``rte``) see the word where it stands in training captions:
"red {shape1} is {phrase} blue {shape2}" for the six ordered pairs of distinct shapes; the rows
of the tokens the encoder tags ``relation`` (``Tokens.categories``) are caption-projected and
averaged over the templates. A multi-word phrase ("to the left of") gives one map per token
(``token_*`` arrays) and, by linearity of the key, its phrase map is the mean of its token maps.
``phrasings="first"`` uses each relation's first phrasing (the single word for
above/below); ``"all"`` averages the phrase maps of all its phrasings.

**Reference pattern** of a relation: the mean-centred linear ramp in the relation's direction
(``engine.data.relations.DIRECTIONS``, y downward), scaled to run from -1 to +1 across the grid;
a diagonal is the mean of its horizontal and vertical ramps. "above" is +1 on the top row: image
positions near the top attend more to the word.

**Metrics** of a map ``m`` against its relation's ramp ``r`` (``m_c = m - mean(m)``):

- ``cosine``: ``<m_c, r> / (|m_c| |r|)``, in [-1, 1];
- ``projection``: the least-squares amplitude ``<m_c, r> / <r, r>`` in logits: the map rises by
  ``2 * projection`` across the grid in the relation's direction (strength, not just shape);
- ``energy``: the signed fraction of the map's spatial energy (variance over the grid) along the
  ramp, ``sign(cos) * cos^2``, in [-1, 1].

Note on random weights: one map of a random head is roughly a ramp in a random direction (the
low-frequency sin-cos features are nearly linear in x and y), so single head x relation scores
of an untrained model scatter widely around 0; the per-head mean over relations stays near 0.

Per head: the best relation (highest score), the mean over relations (a head that reads every
relation word as a ramp in its own direction scores high on all of them: the paper's relation
head), and ``selectivity`` = best score minus the mean of the other relations' scores.

**Modules**: ``method`` (the definition above: names, ramps, metrics; numpy only), ``weights``
(the model side: position features, relation tokens, q.k maps, ``screen``; torch), ``results``
(the ``Screening`` arrays, storing and loading them through any store object, the rows the
tables show, the agreement with a synopsis ranking). The names below are re-exported here.

**Stored** (``Store.write_run(kind="screening")``, run names ``screen-NNNN``), per run:
``maps`` [L, H, R, 8, 8] float32 (logits, row 0 = top), ``references`` [R, 8, 8], ``cosine``,
``projection``, ``energy`` [L, H, R], ``fit`` [L, H, R, 2] (least-squares slopes along x right
and y down), ``relations`` and ``phrases`` (strings, phrasings joined by " | "), per token
``token_maps`` [L, H, T, 8, 8], ``token_cosine|projection|energy`` [L, H, T],
``token_relation`` [T] (index into relations), ``token_phrase``, ``token_text``; attributes
``params`` (JSON: method_version, relations, phrasings, contrast, template, template_shapes,
text_encoder), ``num_layers``, ``num_heads``, ``grid``, ``approximation``, plus the store's
provenance (checkpoint_hash, code_version, created, command).
"""

from engine.probe.screening.method import (
    APPROXIMATION,
    METHOD_VERSION,
    METRICS,
    PHRASINGS_CHOICES,
    TEMPLATE,
    TEMPLATE_SHAPES,
    check_metric,
    check_relation,
    compare_rankings,
    direction_of,
    fit_plane,
    head_summary,
    parse_head,
    reference_ramp,
    references,
    score_maps,
    screen_params,
)
from engine.probe.screening.results import (
    KIND,
    Screening,
    best_rows,
    compare_with_synopsis,
    find_screening,
    head_scores,
    load_screening,
    map_detail,
    relation_rows,
    save_screening,
    synopsis_head_scores,
    token_rows,
)
from engine.probe.screening.weights import (
    RelationTokens,
    low_rank,
    position_features,
    qk_maps,
    relation_tokens,
    screen,
    screen_model,
)

__all__ = [
    "APPROXIMATION", "KIND", "METHOD_VERSION", "METRICS", "PHRASINGS_CHOICES", "TEMPLATE",
    "TEMPLATE_SHAPES", "RelationTokens", "Screening", "best_rows", "check_metric",
    "check_relation", "compare_rankings", "compare_with_synopsis", "direction_of",
    "find_screening", "fit_plane", "head_scores", "head_summary", "load_screening",
    "low_rank", "map_detail", "parse_head", "position_features", "qk_maps", "reference_ramp",
    "references", "relation_rows", "relation_tokens", "save_screening", "score_maps",
    "screen", "screen_model", "screen_params", "synopsis_head_scores", "token_rows",
]  # fmt: skip
