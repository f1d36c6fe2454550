"""Hypothesis properties of the three estimators: affine invariance, permutation equivariance, mask
respect, episode-length invariance and padding invariance (per-episode statistics, penalties inside the
return: the modes where they hold), plus the per-turn mode's zero-sum advantage mass, the locality of a
turn penalty, and failed episodes behaving as if dropped."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himac_verl.advantage import SampleFields, compute_advantage

OLD = {"stats": "episode", "penalty": "episode"}  # per-episode statistics, penalties inside the return

T = 5
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANCHORS = ("a", "b", "c")


def sample(role, task, bp, ep, pass_, turn, ret, r=0.0, anchor="", pen=0.0, ep_pen=0.0, failed=False):
    return {
        "role": role, "task_uid": task, "blueprint_uid": bp, "episode_uid": ep, "pass": pass_, "turn": turn,
        "subgoal_index": -1 if role != "executor" else 0, "step_reward": r, "episode_return": ret,
        "won": ret > 4, "anchor": anchor, "penalty": pen, "episode_penalty": ep_pen, "failed": failed,
    }


returns = st.integers(-4, 20).map(lambda k: k * 0.5)  # a coarse grid: ties and all-equal groups are common
rewards = st.sampled_from([-0.1, 0.0, 1.0, 10.0])


@st.composite
def himac_batches(draw):
    out = []
    for t in range(draw(st.integers(1, 3))):
        task = f"task{t}"
        n_bp = draw(st.integers(1, 3))
        for b in range(n_bp):
            ret = draw(returns)
            out.append(sample("planner", task, f"{task}/bp{b}", f"{task}/p{b}", "macro", 0, ret))
            for k in range(draw(st.integers(1, 4))):  # the greedy episode that scored the blueprint
                out.append(sample("executor", task, f"{task}/bp{b}", f"{task}/g{b}", "macro", k + 1, ret, 0.0, "s"))
        for m in range(draw(st.integers(0, 4))):
            b = draw(st.integers(0, n_bp - 1))
            ret = draw(returns)
            for k in range(draw(st.integers(1, 4))):
                out.append(sample("executor", task, f"{task}/bp{b}", f"{task}/m{m}", "micro", k + 1, ret, 0.0, "s"))
    return out


@st.composite
def flat_batches(draw):
    out = []
    for t in range(draw(st.integers(1, 3))):
        for e in range(draw(st.integers(1, 4))):
            steps = draw(st.lists(st.tuples(st.sampled_from(ANCHORS), rewards), min_size=1, max_size=5))
            ret = float(sum(r for _, r in steps))
            ep_pen = float(sum(r for _, r in steps if r < 0))  # a -0.1 turn is an invalid action
            for k, (anchor, r) in enumerate(steps):
                out.append(sample("flat", f"task{t}", "", f"task{t}/e{e}", "micro", k + 1, ret, r, anchor,
                                  pen=min(r, 0.0), ep_pen=ep_pen))
    return out


@st.composite
def batch_and_mask(draw, names=("himac", "episode_grpo", "gigpo")):
    name = draw(st.sampled_from(names))
    samples = draw(himac_batches() if name == "himac" else flat_batches())
    lengths = draw(st.lists(st.integers(0, T), min_size=len(samples), max_size=len(samples)))
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()
    return name, samples, mask


configs = st.fixed_dictionaries(
    {"stats": st.sampled_from(["turn", "episode"]), "penalty": st.sampled_from(["turn", "episode"]),
     "norm_by_std": st.booleans()}
)


def run(name, samples, mask, **config):
    return compute_advantage(name, samples, mask, config)[0]


@SETTINGS
@given(batch_and_mask(), st.floats(0.1, 10.0), st.floats(-50.0, 50.0))
def test_std_norm_is_affine_invariant(case, scale, shift):
    # eps = 0 makes the invariance exact up to float error; all-equal groups stay all-equal (exact 0).
    name, samples, mask = case
    moved = []
    for s in samples:
        m = dict(s, episode_return=s["episode_return"] * scale + shift)
        if name == "gigpo":  # step returns are sums of discounted rewards: scale (not shift) the rewards
            m["step_reward"] = s["step_reward"] * scale
        moved.append(m)
    base = run(name, samples, mask, eps=0.0, **OLD)
    torch.testing.assert_close(run(name, moved, mask, eps=0.0, **OLD), base, atol=1e-4, rtol=1e-4)


@SETTINGS
@given(batch_and_mask(), st.floats(0.1, 10.0), st.floats(-50.0, 50.0))
def test_mean_only_is_shift_invariant_and_scales_linearly(case, scale, shift):
    name, samples, mask = case
    base = run(name, samples, mask, norm_by_std=False, **OLD)
    shifted = [dict(s, episode_return=s["episode_return"] + shift) for s in samples]
    torch.testing.assert_close(run(name, shifted, mask, norm_by_std=False, **OLD), base, atol=1e-4, rtol=1e-4)
    scaled = [dict(s, episode_return=s["episode_return"] * scale, step_reward=s["step_reward"] * scale)
              for s in samples]
    torch.testing.assert_close(run(name, scaled, mask, norm_by_std=False, **OLD), base * scale, atol=1e-3,
                               rtol=1e-4)


@SETTINGS
@given(batch_and_mask(), st.randoms(use_true_random=False), configs)
def test_permuting_samples_permutes_advantages(case, rnd, config):
    name, samples, mask = case
    perm = list(range(len(samples)))
    rnd.shuffle(perm)
    base = run(name, samples, mask, **config)
    permuted = run(name, [samples[i] for i in perm], mask[perm], **config)
    torch.testing.assert_close(permuted, base[perm], atol=1e-5, rtol=1e-5)


@SETTINGS
@given(batch_and_mask(), configs)
def test_masked_tokens_are_zero_and_mask_does_not_change_values(case, config):
    name, samples, mask = case
    adv = run(name, samples, mask, **config)
    assert torch.all(adv[mask == 0] == 0)
    full = run(name, samples, torch.ones_like(mask), **config)
    assert torch.equal(adv, full * mask)  # the same per-sample value, just masked
    assert torch.all(full == full[:, :1])  # one value per sample across its tokens


@SETTINGS
@given(batch_and_mask(names=("himac", "episode_grpo")), st.data())
def test_episode_length_does_not_change_group_statistics(case, data):
    # Lengthen one (non-planner) episode by extra turns: every original sample keeps its advantage and the
    # new turns get their episode's, i.e. statistics are over unique episodes (stats="episode").
    name, samples, mask = case
    candidates = [i for i, s in enumerate(samples) if s["role"] != "planner"]
    if not candidates:
        return
    i = data.draw(st.sampled_from(candidates))
    extra = data.draw(st.integers(1, 20))
    last_turn = max(s["turn"] for s in samples if s["episode_uid"] == samples[i]["episode_uid"])
    longer = samples + [dict(samples[i], turn=last_turn + k + 1) for k in range(extra)]
    longer_mask = torch.cat([mask, torch.ones(extra, T)])
    base = run(name, samples, mask, **OLD)
    adv = run(name, longer, longer_mask, **OLD)
    assert torch.equal(adv[: len(samples)], base)
    assert torch.all(adv[len(samples):] == run(name, samples, torch.ones_like(mask), **OLD)[i, 0])


@SETTINGS
@given(flat_batches(), configs)
def test_gigpo_without_step_term_is_episode_grpo(samples, config):
    mask = torch.ones(len(samples), T)
    torch.testing.assert_close(run("gigpo", samples, mask, step_weight=0.0, **config),
                               run("episode_grpo", samples, mask, **config))


@SETTINGS
@given(batch_and_mask(), st.data(), configs)
def test_padding_rows_change_nothing_and_get_zero(case, data, config):
    name, samples, mask = case
    copies = data.draw(st.lists(st.integers(0, len(samples) - 1), min_size=1, max_size=6))
    padded = samples + [dict(samples[i]) for i in copies]  # verl deep-copies a real sample
    padded_mask = torch.cat([mask, torch.ones(len(copies), T)])  # even with live tokens
    fields = SampleFields.from_extra_fields(padded, is_padding=np.arange(len(padded)) >= len(samples))
    adv = compute_advantage(name, fields, padded_mask, config)[0]
    assert torch.equal(adv[: len(samples)], run(name, samples, mask, **config))
    assert torch.all(adv[len(samples):] == 0)


# ------------------------------------------------------------------------------- per-turn mode, failures
def _groups(name, samples):
    """The outcome group key of each sample (None: joins no group): macro (task), micro (task, blueprint),
    flat (task)."""
    keys = []
    for s in samples:
        if s["role"] == "planner":
            keys.append(("macro", s["task_uid"]))
        elif s["role"] == "executor":
            keys.append(("micro", s["task_uid"], s["blueprint_uid"]) if s["pass"] == "micro" else None)
        else:
            keys.append(("flat", s["task_uid"]))
    return keys


@SETTINGS
@given(batch_and_mask(), st.sampled_from(["turn", "episode"]), st.booleans())
def test_turn_stats_advantage_mass_sums_to_zero_per_group(case, penalty, norm_by_std):
    # Every group of two or more samples: the advantages over its samples sum to 0, whatever the episode
    # lengths (GiGPO's step term is mean-centred within anchor groups, which lie within a task).
    name, samples, _ = case
    adv = run(name, samples, torch.ones(len(samples), 1), stats="turn", penalty=penalty, norm_by_std=norm_by_std)
    totals, counts, scale = {}, {}, {}
    for key, a, s in zip(_groups(name, samples), adv[:, 0].double().tolist(), samples):
        if key is not None:
            totals[key] = totals.get(key, 0.0) + a
            counts[key] = counts.get(key, 0) + 1
            scale[key] = scale.get(key, 0.0) + abs(a)
    for key, total in totals.items():
        if counts[key] >= 2:
            assert abs(total) <= 1e-5 * (1.0 + scale[key]), (key, total)


@SETTINGS
@given(batch_and_mask(), st.data(), configs)
def test_failed_episodes_count_as_dropped_unless_the_group_dies(case, data, config):
    # Failing some episodes == removing them from the batch, except that their samples get 0 and a group
    # that lost an episode and kept fewer than two healthy episodes gets 0 on all its samples.
    name, samples, mask = case
    # a planner and its scoring greedy episode fail together (the planner carries its episode's flag)
    unit = [s["episode_uid"].replace("/p", "/g") if s["role"] == "planner" else s["episode_uid"] for s in samples]
    units = sorted(set(unit))
    failing = set(data.draw(st.lists(st.sampled_from(units), unique=True, max_size=len(units))))
    marked = [dict(s, failed=u in failing) for s, u in zip(samples, unit)]
    adv = run(name, marked, mask, **config)
    keys = _groups(name, samples)
    episodes = {}
    for key, s, u in zip(keys, samples, unit):
        if key is not None:
            episodes.setdefault(key, {})[s["episode_uid"]] = u in failing
    dead = {k for k, eps in episodes.items() if any(eps.values()) and sum(not f for f in eps.values()) < 2}
    keep = [i for i, u in enumerate(unit) if u not in failing]
    expected = torch.zeros_like(adv)
    if keep:
        expected[keep] = run(name, [samples[i] for i in keep], mask[keep], **config)
    for i, key in enumerate(keys):
        if key in dead:
            expected[i] = 0.0
    if name == "gigpo":  # the whole sample (step term included) of a dead task is 0
        for i, s in enumerate(samples):
            if ("flat", s["task_uid"]) in dead:
                expected[i] = 0.0
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)


@SETTINGS
@given(batch_and_mask(names=("himac", "episode_grpo")), st.data(), st.booleans())
def test_a_turn_penalty_moves_only_its_own_turn(case, data, norm_by_std):
    # stats="episode", penalty="turn": an invalid turn (-0.1 in step_reward, episode_return, penalty and
    # episode_penalty) changes its own advantage by exactly -0.1 and no other sample's.
    name, samples, mask = case
    candidates = [i for i, s in enumerate(samples)
                  if (s["role"] == "flat" or (s["role"] == "executor" and s["pass"] == "micro")) and s["penalty"] == 0]
    if not candidates:
        return
    i = data.draw(st.sampled_from(candidates))
    ep = samples[i]["episode_uid"]
    hit = []
    for k, s in enumerate(samples):
        if s["episode_uid"] == ep:
            s = dict(s, episode_return=s["episode_return"] - 0.1, episode_penalty=s["episode_penalty"] - 0.1)
            if k == i:
                s.update(step_reward=s["step_reward"] - 0.1, penalty=-0.1)
        hit.append(s)
    config = {"stats": "episode", "penalty": "turn", "norm_by_std": norm_by_std}
    base = run(name, samples, torch.ones(len(samples), 1), **config)
    adv = run(name, hit, torch.ones(len(samples), 1), **config)
    expected = base.clone()
    expected[i] -= 0.1
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
