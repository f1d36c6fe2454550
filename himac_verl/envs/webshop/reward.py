"""WebShop's purchase reward, reproduced term by term (docs/env_webshop.md, "Reward", states every term).

    total = r_type * (attribute_matches + option_matches + r_price) / (#attributes + #goal_options + 1)

The original is computed when "Buy Now" is clicked; success is ``total == 1.0`` (every attribute and
option matched, price within the bound and ``r_type == 1``); the bought product need not be the goal's.
Quirks kept on purpose, because the published numbers were measured with them:

- Fuzzy matching is thefuzz 0.22's ``token_set_ratio``: the inputs go through ``str()``, characters
  U+0080..U+00FF are deleted, then rapidfuzz's default processing (lower case, non-alphanumerics to
  spaces), and the ratio is rounded to an int before the ``> 85`` test.
- Synthetic goals hand their options over as (name, value) pairs: colour normalisation then fires only
  when a colour word *equals* the value, and the fuzzy match sees the pair's ``str()``, whose tokens are
  "name value" pieces, so a selected value whose tokens are a subset of them scores 100
  ("large" vs ("size", "x-large")).
- Selected values are colour-normalised by substring, so "dark wash" becomes "ash" and can then miss.
- The title score divides by the number of goal-title nouns *with repeats*, the intersection is of sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

# WebShop's normalisation colour list (web_agent_site/engine/normalize.py): the first entry that occurs
# in a value replaces it, so the order (alphabetical) matters.
COLOR_SET: tuple[str, ...] = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue",
    "blush", "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne",
    "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral",
    "cranberry", "cream", "crystal", "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia",
    "gold", "granite", "grape", "graphite", "grass", "gray", "green", "grey", "heather", "indigo",
    "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light", "lilac", "lime", "magenta",
    "maroon", "mauve", "merlot", "midnight", "mint", "mocha", "multicolor", "mushroom", "mustard",
    "natural", "navy", "nude", "olive", "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow",
    "red", "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull", "slate", "steel",
    "stone", "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise", "violet", "walnut",
    "wheat", "white", "wine", "yellow",
)
FUZZY_THRESHOLD = 85  # a match needs a (rounded) score strictly above this
CATEGORY_SEPARATOR = "›"

_LATIN1_DELETE = dict.fromkeys(range(128, 256))


def fuzzy_token_set_ratio(a: object, b: object) -> int:
    """thefuzz 0.22 ``fuzz.token_set_ratio(a, b)`` (force_ascii, full_process): an int in 0..100."""
    s1 = default_process(str(a).translate(_LATIN1_DELETE))
    s2 = default_process(str(b).translate(_LATIN1_DELETE))
    return int(round(fuzz.token_set_ratio(s1, s2)))


def normalize_color(value: str | tuple[str, str]) -> str | tuple[str, str]:
    """The first colour of ``COLOR_SET`` that is ``in`` the value (substring of a str; equal element of a
    pair), else the value unchanged."""
    for color in COLOR_SET:
        if color in value:
            return color
    return value


def attribute_matches(
    goal_attributes: Sequence[str],
    product_attributes: Sequence[str],
    title: str,
    bullet_points: Sequence[str],
    description: str,
) -> int:
    """How many goal attributes the product has: fuzzy-equal to one of its attributes, else a plain
    substring of its lower-cased title, joined bullet points or description."""
    text_fields = (title.lower(), " ".join(bullet_points).lower(), description.lower())
    matches = 0
    for g_attr in goal_attributes:
        if any(fuzzy_token_set_ratio(p_attr, g_attr) > FUZZY_THRESHOLD for p_attr in product_attributes):
            matches += 1
        elif any(g_attr in text for text in text_fields):
            matches += 1
    return matches


def option_matches(selected_values: Sequence[str], goal_options: Sequence[str | tuple[str, str]]) -> int:
    """How many goal options some selected value fuzzy-matches, both sides colour-normalised."""
    selected = [normalize_color(v) for v in selected_values]
    matches = 0
    for g_opt in (normalize_color(o) for o in goal_options):
        if any(fuzzy_token_set_ratio(s, g_opt) > FUZZY_THRESHOLD for s in selected):
            matches += 1
    return matches


@dataclass(frozen=True)
class TypeReward:
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float


def type_reward(
    product_query: str,
    product_category: str,
    product_nouns: Sequence[str],
    goal_query: str,
    goal_category: str,
    goal_nouns: Sequence[str],
) -> TypeReward:
    """Is the bought product the wanted kind of thing? 1.0 if the scrape queries are equal, or the
    category paths share >= 2 levels, or title score > 0.2; else 0.5. Then 0.1 if title score < 0.1, and
    0.0 if it is 0. Title score = |set(product nouns) & set(goal nouns)| / len(goal nouns) (0.2 when
    the goal title has no noun)."""
    query_match = product_query == goal_query
    p_levels = {x.strip() for x in product_category.split(CATEGORY_SEPARATOR)}
    g_levels = {x.strip() for x in goal_category.split(CATEGORY_SEPARATOR)}
    category_match = len(p_levels & g_levels) >= 2
    if goal_nouns:
        title_score = len(set(product_nouns) & set(goal_nouns)) / len(goal_nouns)
    else:
        title_score = 0.2
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return TypeReward(r_type, query_match, category_match, title_score)


@dataclass(frozen=True)
class RewardBreakdown:
    total: float  # the WebShop score in [0, 1]
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float
    attribute_matches: int
    num_attributes: int
    option_matches: int
    num_options: int
    r_price: float

    @property
    def success(self) -> bool:
        return self.total == 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def purchase_reward(product, goal, price: float, selected_options: Mapping[str, str]) -> RewardBreakdown:
    """The score of buying ``product`` (a ``data.Product``) at ``price`` with ``selected_options`` (group
    name -> value) for ``goal`` (a ``goals.Goal``)."""
    t = type_reward(product.query, product.product_category, product.title_nouns,
                    goal.query, goal.product_category, goal.name_nouns)
    r_price = 1.0 if price <= goal.price_upper else 0.0
    n_attr = attribute_matches(goal.attributes, product.attributes, product.title, product.bullet_points,
                               product.description)
    n_opt = option_matches(list(selected_options.values()), goal.goal_options)
    denominator = len(goal.attributes) + len(goal.goal_options) + 1
    total = (n_attr + n_opt + r_price) / denominator * t.r_type  # the original's order of operations
    return RewardBreakdown(
        total=total,
        r_type=t.r_type,
        query_match=t.query_match,
        category_match=t.category_match,
        title_score=t.title_score,
        attribute_matches=n_attr,
        num_attributes=len(goal.attributes),
        option_matches=n_opt,
        num_options=len(goal.goal_options),
        r_price=r_price,
    )
