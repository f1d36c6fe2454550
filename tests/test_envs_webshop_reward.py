"""WebShop reward: hand-checked cases of the reward of docs/env_webshop.md ("Reward"), quirks included.

Each case writes its arithmetic in a comment. ``ratio(a, b)`` below is rapidfuzz's normalised Indel
similarity, 100 * 2 * LCS(a, b) / (len(a) + len(b)); token_set_ratio(a, b) is the max of the ratios of
"intersection", "intersection + rest of a" and "intersection + rest of b" (100 when the intersection is
non-empty and one token set contains the other).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from himac_verl.envs.webshop.data import Product
from himac_verl.envs.webshop.goals import Goal
from himac_verl.envs.webshop.reward import (
    COLOR_SET,
    attribute_matches,
    fuzzy_token_set_ratio,
    normalize_color,
    option_matches,
    purchase_reward,
    type_reward,
)

TEA_CATEGORY = "Grocery & Gourmet Food › Beverages › Tea › Green"


def make_product(**overrides) -> Product:
    fields = dict(
        asin="B000TEST01",
        name="Acme Organic Green Tea Bags, 100 Count",
        title="Acme Organic Green Tea Bags, 100 Count",
        description="A smooth tea. Gluten free and vegan.",
        bullet_points=("Packed in the USA", "Caffeine: 25 mg"),
        price_text="$9.99",
        pricing=(9.99,),
        product_category=TEA_CATEGORY,
        category="grocery",
        query="green tea",
        options={"flavor": ("jasmine", "vanilla"), "size": ("50 count", "100 count")},
        attributes=("organic", "kosher certified"),
        rating="N.A.",
        reviews=(),
        instruction_text=None,
        instruction_attributes=(),
        human_instructions=(),
        title_nouns=("acme", "tea", "bags", "count"),
        contents="acme organic green tea bags",
    )
    fields.update(overrides)
    return Product(**fields)


def make_goal(**overrides) -> Goal:
    fields = dict(
        asin="B000TEST01",
        category="grocery",
        query="green tea",
        name="Acme Organic Green Tea Bags, 100 Count",
        name_nouns=("acme", "tea", "bags", "count"),
        product_category=TEA_CATEGORY,
        instruction_text="i want organic gluten free green tea with flavor: jasmine, and size: 100 count",
        attributes=("organic", "gluten free"),
        goal_options=(("flavor", "jasmine"), ("size", "100 count")),
        price_upper=20.0,
        weight=1.0,
        kind="synthetic",
    )
    fields.update(overrides)
    return Goal(**fields)


RIGHT_OPTIONS = {"flavor": "jasmine", "size": "100 count"}


def test_right_product_right_options_price_ok_scores_one():
    # attributes: "organic" fuzzy-equals the product attribute "organic" (100 > 85); "gluten free" is
    # not an attribute but a substring of the lower-cased description -> 2 of 2.
    # options: "jasmine" vs ('flavor', 'jasmine') -> tokens {jasmine} within {flavor, jasmine} -> 100;
    # "100 count" vs ('size', '100 count') -> {100, count} within {size, 100, count} -> 100 -> 2 of 2.
    # price 9.99 <= 20 -> 1; query equal -> r_type 1.0.  total = 1.0 * (2 + 2 + 1) / (2 + 2 + 1) = 1.0
    b = purchase_reward(make_product(), make_goal(), 9.99, RIGHT_OPTIONS)
    assert (b.attribute_matches, b.option_matches, b.r_price, b.r_type) == (2, 2, 1.0, 1.0)
    assert b.total == 1.0 and b.success


def test_wrong_option_loses_one_fifth():
    # "vanilla" vs ('flavor', 'jasmine'): no shared token; ratio("vanilla", "flavor jasmine") =
    # 100 * 2 * LCS 3 ("ain") / (7 + 14) = 28.6 -> 29 <= 85 -> no match ("vanilla" is no colour).
    # total = 1.0 * (2 + 1 + 1) / 5 = 0.8
    assert fuzzy_token_set_ratio("vanilla", ("flavor", "jasmine")) == 29
    b = purchase_reward(make_product(), make_goal(), 9.99, {"flavor": "vanilla", "size": "100 count"})
    assert b.option_matches == 1
    assert b.total == pytest.approx(0.8) and not b.success


def test_no_option_selected_counts_zero_options():
    # Buying without clicking any option: 0 of 2 options. total = (2 + 0 + 1) / 5 = 0.6
    b = purchase_reward(make_product(), make_goal(), 9.99, {})
    assert b.total == pytest.approx(0.6)


def test_over_budget_price():
    # price 25.00 > price_upper 20 -> r_price 0. total = (2 + 2 + 0) / 5 = 0.8; price == bound is OK.
    assert purchase_reward(make_product(), make_goal(), 25.0, RIGHT_OPTIONS).total == pytest.approx(0.8)
    assert purchase_reward(make_product(), make_goal(), 20.0, RIGHT_OPTIONS).total == 1.0


def test_missing_attribute():
    # Goal attributes organic / gluten free / non gmo. "non gmo": no product attribute fuzzy-matches
    # ("organic": no shared token, ratio("organic", "gmo non") = 100 * 2 * LCS 2 / 14 = 28.6 -> 29;
    # "kosher certified" -> 17), and the bullet "Non-GMO verified" lower-cases to "non-gmo verified", which does not
    # contain "non gmo" (the substring test is not normalised). -> 2 of 3.
    # total = (2 + 2 + 1) / (3 + 2 + 1) = 5/6
    assert fuzzy_token_set_ratio("organic", "non gmo") == 29
    assert fuzzy_token_set_ratio("kosher certified", "non gmo") == 17
    product = make_product(bullet_points=("Non-GMO verified",))
    goal = make_goal(attributes=("organic", "gluten free", "non gmo"))
    b = purchase_reward(product, goal, 9.99, RIGHT_OPTIONS)
    assert (b.attribute_matches, b.num_attributes) == (2, 3)
    assert b.total == pytest.approx(5 / 6)


def test_attribute_fuzzy_and_substring_paths():
    # "Gluten-Free" processes to "gluten free" -> 100 > 85: matched by the attribute list.
    assert attribute_matches(["gluten free"], ["Gluten-Free"], "", [], "") == 1
    # Substring of the title, the joined bullets, or the description (each lower-cased).
    assert attribute_matches(["tea bags"], [], "Acme Tea Bags", [], "") == 1
    assert attribute_matches(["tea bags"], [], "", ["Premium tea", "bags inside"], "") == 1  # "premium tea bags inside"
    assert attribute_matches(["tea bags"], [], "", [], "Loose TEA BAGS.") == 1
    assert attribute_matches(["tea bags"], [], "", [], "Loose tea-bags") == 0


def test_fuzzy_ratio_is_rounded_before_the_threshold():
    # Two single tokens of 27 characters sharing a 23-character prefix: no shared token, so the score is
    # ratio = 100 * 2 * 23 / 54 = 85.19, which thefuzz rounds to 85: NOT > 85. (Unrounded it would match.)
    a = "abcdefghijklmnopqrstuvw" + "1234"
    b = "abcdefghijklmnopqrstuvw" + "5678"
    assert fuzzy_token_set_ratio(a, b) == 85
    assert attribute_matches([a], [b], "", [], "") == 0
    # 100 * 2 * 6 / 14 = 85.71 -> 86 > 85: a match.
    assert fuzzy_token_set_ratio("abcdef1", "abcdef2") == 86
    assert attribute_matches(["abcdef1"], ["abcdef2"], "", [], "") == 1


def test_fuzzy_ratio_deletes_latin1_characters():
    # thefuzz (force_ascii) deletes U+0080..U+00FF before processing: "café" -> "caf"; "caf" == "caf".
    assert fuzzy_token_set_ratio("café", "caf") == 100
    # ... but keeps characters above U+00FF ("ā" is alphanumeric and stays): "cafā" vs "caf":
    # token sets {cafā} and {caf} share nothing; ratio = 100 * 2 * 3 / 7 = 85.71 -> 86.
    assert fuzzy_token_set_ratio("cafā", "caf") == 86


def test_option_pair_quirk_subset_tokens_score_100():
    # Spec example: "large" vs ('size', 'x-large') -> str "('size', 'x-large')" -> tokens {size, x, large};
    # {large} is a subset -> 100 -> a match although the goal wants x-large.
    assert fuzzy_token_set_ratio("large", ("size", "x-large")) == 100
    assert option_matches(["large"], [("size", "x-large")]) == 1
    # The other way round: "x-large" -> {x, large} vs {size, large}: intersection "large";
    # ratio("large", "large x") = 100 * 2*5/12 = 83.3, ratio("large", "large size") = 66.7,
    # ratio("large x", "large size") = 100 * 2*6/17 = 70.6 -> 83, not > 85: no match.
    assert fuzzy_token_set_ratio("x-large", ("size", "large")) == 83
    assert option_matches(["x-large"], [("size", "large")]) == 0


def test_option_colour_normalisation_on_pairs_and_strings():
    # A pair is normalised only when a colour word EQUALS one of its elements.
    assert normalize_color(("color", "black")) == "black"
    assert normalize_color(("color", "jet black")) == ("color", "jet black")
    # A selected string is normalised by substring: the first colour (alphabetical list) inside it.
    assert normalize_color("jet black") == "black"
    assert normalize_color("light blue") == "blue"  # "blue" comes before "light" in the list
    assert normalize_color("x-large") == "x-large"
    # "jet black" -> "black" matches the goal ('color', 'black') -> "black".
    assert option_matches(["jet black"], [("color", "black")]) == 1


def test_option_colour_normalisation_quirk_makes_the_exact_value_miss():
    # Goal ('color', 'dark wash') stays a pair (no colour equals an element). The selected, exactly right
    # value "dark wash" is normalised by substring to "ash" ("ash" precedes "dark" in the list).
    # "ash" vs tokens {color, dark, wash}: no shared token; ratio("ash", "color dark wash") =
    # 100 * 2*3/18 = 33.3 -> no match. So the goal product bought with the goal option scores < 1.
    assert normalize_color("dark wash") == "ash"
    assert fuzzy_token_set_ratio("ash", ("color", "dark wash")) == 33
    assert option_matches(["dark wash"], [("color", "dark wash")]) == 0
    # Same with "black2070" -> "black" vs {color, black2070}: ratio("black", "black2070 color") = 100*10/20 = 50.
    assert option_matches(["black2070"], [("color", "black2070")]) == 0


def test_human_goal_options_are_plain_strings():
    # Human goals name values ("120ml"); both sides are strings, normalised by substring.
    assert option_matches(["120ml"], ["120ml"]) == 1
    assert option_matches(["navy blue", "small"], ["blue", "small"]) == 2  # "navy blue" -> "blue"
    goal = make_goal(goal_options=("jasmine",), kind="human")
    b = purchase_reward(make_product(), goal, 9.99, {"flavor": "jasmine"})
    # total = (2 + 1 + 1) / (2 + 1 + 1) = 1.0
    assert b.total == 1.0


def test_type_reward_product_of_another_type():
    # A mug bought for a tea goal: scrape queries differ; "Home & Kitchen › Kitchen & Dining › Mugs" and
    # the tea path share no level -> no category match.
    # Title score: goal nouns (acme, tea, bags, count, box, pack), product nouns {acme, mug, lid}:
    # |{acme}| / 6 = 0.1667 -> not > 0.2 -> r_type 0.5; not < 0.1 -> stays 0.5.
    mug = make_product(
        query="coffee mugs", product_category="Home & Kitchen › Kitchen & Dining › Mugs",
        title_nouns=("acme", "mug", "lid"),
    )
    goal = make_goal(name_nouns=("acme", "tea", "bags", "count", "box", "pack"))
    t = type_reward(
        mug.query, mug.product_category, mug.title_nouns, goal.query, goal.product_category, goal.name_nouns
    )
    assert (t.query_match, t.category_match) == (False, False)
    assert t.title_score == pytest.approx(1 / 6) and t.r_type == 0.5
    # Everything else right: total = (2 + 2 + 1) / 5 * 0.5 = 0.5
    assert purchase_reward(mug, goal, 9.99, RIGHT_OPTIONS).total == pytest.approx(0.5)


def test_type_reward_title_score_bands():
    cat_a, cat_b = "A › B › C", "X › Y › Z"
    eleven = tuple(f"n{i}" for i in range(11))
    # 1 shared of 11 goal nouns = 0.0909 < 0.1 -> 0.1 (even with a query match).
    assert type_reward("q", cat_a, ("n0",), "q", cat_a, eleven).r_type == 0.1
    # No shared noun: title score 0 -> 0.0, even when query AND category match.
    zero = type_reward("q", cat_a, ("other",), "q", cat_a, ("tea", "bag"))
    assert (zero.query_match, zero.category_match, zero.title_score, zero.r_type) == (True, True, 0.0, 0.0)
    # 1 of 3 = 0.333 > 0.2 -> 1.0 without query or category match.
    assert type_reward("q1", cat_a, ("tea",), "q2", cat_b, ("tea", "bag", "box")).r_type == 1.0
    # Category match needs >= 2 shared levels (order ignored): {A, B} shared -> match.
    assert type_reward("q1", "A › B › D", ("tea",), "q2", "B › A › C", ("tea",) + eleven[:5]).category_match
    assert not type_reward("q1", "A › D", ("tea",), "q2", "A › C", ("tea",)).category_match
    # Goal title without nouns: title score 0.2 (not > 0.2): 1.0 only through query/category, else 0.5.
    assert type_reward("q1", cat_a, ("x",), "q2", cat_b, ()).r_type == 0.5
    assert type_reward("q", cat_a, ("x",), "q", cat_b, ()).r_type == 1.0


def test_type_reward_counts_repeated_goal_nouns():
    # Quirk: the denominator is the goal noun LIST (repeats kept), the numerator a set intersection.
    # goal nouns (tea, tea, tea, tea, bag): |{tea}| / 5 = 0.2 -> not > 0.2 -> 0.5 (with distinct nouns it
    # would be 1/2 = 0.5 -> 1.0).
    t = type_reward("q1", "A › B", ("tea",), "q2", "X › Y", ("tea", "tea", "tea", "tea", "bag"))
    assert t.title_score == pytest.approx(0.2) and t.r_type == 0.5


def test_total_multiplies_type_after_the_division():
    # Original order: (matches / denominator) * r_type. With 3 attributes, 0 options: (2 + 0 + 1) / 4 * 0.1.
    product = make_product(query="x", product_category="P › Q", title_nouns=("n0",))
    goal = make_goal(
        attributes=("organic", "gluten free", "non gmo"), goal_options=(),
        name_nouns=tuple(f"n{i}" for i in range(11)),
    )
    b = purchase_reward(product, goal, 9.99, {})
    assert b.r_type == 0.1
    assert b.total == (2 + 0 + 1.0) / 4 * 0.1


def test_colour_list_is_the_originals():
    # 102 colours, alphabetical; the first-match order is what makes "dark wash" -> "ash".
    assert len(COLOR_SET) == 102 and list(COLOR_SET) == sorted(COLOR_SET)
    assert {"ash", "tan", "light", "dark", "natural", "christmas"} <= set(COLOR_SET)


@pytest.fixture(scope="module")
def webshop_env():
    from himac_verl.envs import make_env

    return make_env("webshop")


def test_real_goal_product_scores_one(webshop_env):
    # A real test goal: its own product with its own options is a success.
    env = webshop_env
    goal = next(g for g in env.goal_set.split("test") if len(g.goal_options) == 2)
    product = env.catalog.product(goal.asin)
    b = purchase_reward(product, goal, env.goal_set.prices[goal.asin], dict(goal.goal_options))
    assert b.success and b.query_match
    # The same purchase one grid step over budget: price 1 / (#attr + 2 + 1) lost.
    b2 = purchase_reward(product, replace(goal, price_upper=env.goal_set.prices[goal.asin] - 0.01),
                         env.goal_set.prices[goal.asin], dict(goal.goal_options))
    assert b2.total == pytest.approx((len(goal.attributes) + 2) / (len(goal.attributes) + 3))
