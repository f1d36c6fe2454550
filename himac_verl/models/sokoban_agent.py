"""The STARTING MODEL of the CPU learning demo: a small Qwen2 with the project's own tokenizer, warm-started
on Sokoban data the project generates from its own solver, competent but far from perfect.

``build_sokoban_agent(path)`` (idempotent, cached by a marker JSON holding the spec and the measured
numbers) does, all offline:

1. DATA. Training levels are the env's own ``train`` tasks under ``SokobanAgentSpec.env_options`` (the
   options the lead passes as ``himac.env_kwargs``). For each level the generator's optimal plan is cut into
   push subgoals (``subgoals.plan_subgoals``: the ORACLE blueprint). Three roles, prompts rendered exactly
   as the loops render them (``planner_prompt`` / ``executor_prompt`` / ``flat_prompt`` below mirror
   ``himac_loop._macro_episode``, ``himac_loop._execute`` and ``flat_loop``):

   - planner: the first board -> ``<plan>\\n1. push the box left\\n...\\n</plan>`` (the oracle blueprint);
   - executor: episodes simulated under the loop's rules (active subgoal, this subgoal's moves only,
     ``<sub_done>`` advancing, the per-subgoal step budget) with the blueprint's expert
     (``subgoals.expert_move``: a shortest walk to the push cell, then the push) ->
     ``<action>DIR</action>`` plus ``<sub_done>`` when the move ``completes`` the active subgoal;
   - flat: episodes of the solver's own optimal move from every state (``solver.solve``, re-solved from
     the current position) -> ``<action>DIR</action>``; the prompt shows the last ``flat_history_turns``
     moves like ``flat_loop``.

   NOISE (so the start is imperfect and sampling at temperature 1 is diverse; each draw is recorded in
   the example's ``noise`` field, and the tests check the rates):

   - planner targets: ``plan_wrong_push_prob`` one subgoal's direction replaced by another direction;
     else ``plan_missing_push_prob`` one subgoal dropped (plans of >= 2 subgoals); else
     ``plan_extra_push_prob`` one random push subgoal inserted; else ``plan_malformed_prob`` the closing
     ``</plan>`` left out (does not parse);
   - executor: ``executor_noisy_plan_prob`` of the episodes run under a noised blueprint (the planner noise
     above, malformed excluded) instead of the oracle one, so the executor learns to follow what it is
     given; each target move is, with ``executor_move_noise_prob``, replaced by a uniformly drawn OTHER move
     (the episode goes on from where that move leads: the data also covers recoveries); the ``<sub_done>``
     tag is left out with ``sub_done_omit_prob`` where the move completes the subgoal, and written with
     ``sub_done_spurious_prob`` where it does not (the simulation itself advances on the true completion);
   - flat: ``flat_move_noise_prob`` of the target moves replaced by another move (the episode goes on from
     there).

2. TOKENIZER. A byte-level BPE (vocabulary ``vocab_size``) trained on the rendered prompts and targets,
   with a pre-tokenizer that isolates every board symbol (``# _ . $ * @ +``), ``"\\n"``, ``<sub_done>`` and
   digit runs: the board is a fixed grid of one token per cell, ``"\\n"`` is one token (verl's continuous
   token builder requires it) and the templates' fixed phrases merge into few long tokens (short prompts:
   a fast model). ChatML template, eos ``<|im_end|>``, pad ``<|endoftext|>`` (as ``tiny.py``).

3. MODEL + SFT. A ``Qwen2ForCausalLM`` (``hidden_size``/``num_layers``/... of the spec), trained with plain
   torch AdamW (warm-up then cosine decay, gradient clipping) on the RESPONSE tokens only (prompt tokens
   masked), batches of similar lengths (little padding).

4. MEASUREMENT (``measure``) on held-out ``test`` levels through the REAL loops (``HiMACAgentLoop`` /
   ``FlatAgentLoop`` on the CPU rollout server ``HFCpuServer``, in process, greedy ``eval`` phase): planner
   parse rate and HiMAC success, flat success; executor subgoal-following and ``<sub_done>``
   precision/recall under ORACLE blueprints (a direct re-implementation of the executor loop, since the
   loop only executes blueprints its planner wrote); a uniformly random mover's success; sizes and speed.

CLI: ``python -m himac_verl.models.sokoban_agent --out DIR [--levels 128]`` (progress lines, then the table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

MARKER = "himac_sokoban_agent.json"
DIRECTIONS = ("up", "down", "left", "right")
BOARD_SYMBOLS = ("#", "_", ".", "$", "*", "@", "+")
SUB_DONE = "<sub_done>"
# The pre-tokenizer's isolated pieces: <sub_done> (one token), digit runs, each board symbol, the newline.
def _pretoken_pattern() -> str:
    """The isolated pieces: the env's legend (one piece: it merges into one token), ``<sub_done>``, digit
    runs, each plain board symbol, the newline, each position-coded cell character."""
    from himac_verl.envs.sokoban.level import LEGEND_TEXT

    return re.escape(LEGEND_TEXT) + "|<sub_done>|[0-9]+|[#_.$*@+\n]|[\ue000-\uefff]"


@dataclass(frozen=True)
class SokobanAgentSpec:
    """Every knob of the starting model (the marker file holds it; changing one rebuilds)."""

    seed: int = 0
    # --- levels and loop settings (the lead's himac.env_kwargs / himac.agent.*) ---
    env_options: tuple[tuple[str, Any], ...] = (("min_moves", 4),)  # SokobanEnv/GeneratorConfig options
    max_env_steps: int = 15  # himac.agent.max_env_steps
    subgoal_step_budget: int = 8  # himac.agent.subgoal_step_budget (oracle walks need up to ~9 steps)
    max_subgoals: int = 6  # himac.agent.max_subgoals
    flat_history_turns: int = 2  # himac.agent.flat_history_turns
    # --- data: examples per role ---
    planner_examples: int = 8000
    executor_examples: int = 16000
    flat_examples: int = 12000
    # --- data noise (module docstring) ---
    plan_wrong_push_prob: float = 0.10
    plan_missing_push_prob: float = 0.05
    plan_extra_push_prob: float = 0.05
    plan_malformed_prob: float = 0.03
    executor_noisy_plan_prob: float = 0.15
    executor_move_noise_prob: float = 0.10
    sub_done_omit_prob: float = 0.10
    sub_done_spurious_prob: float = 0.03
    flat_move_noise_prob: float = 0.10
    # --- tokenizer ---
    vocab_size: int = 1024
    # --- model ---
    hidden_size: int = 192
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    rope_theta: float = 10000.0
    # --- SFT ---
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    pointers: bool = True  # responses start with the player/box(/target) cell tokens (module docstring)
    num_threads: int = 2  # torch threads of the build (the machine's cores)
    version: int = 1

    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.env_options)

    def board_shape(self) -> tuple[int, int]:
        opts = self.env_kwargs()
        return int(opts.get("height", 6)), int(opts.get("width", 6))

    def validate(self) -> None:
        probs = {k: v for k, v in asdict(self).items() if k.endswith("_prob")}
        bad = {k: v for k, v in probs.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"SokobanAgentSpec: probabilities must lie in [0, 1], got {bad}")
        plan = (self.plan_wrong_push_prob + self.plan_missing_push_prob + self.plan_extra_push_prob
                + self.plan_malformed_prob)
        if plan > 1.0:
            raise ValueError(f"SokobanAgentSpec: the plan noise probabilities sum to {plan} > 1")
        if min(self.planner_examples, self.executor_examples, self.flat_examples) < 1 or self.steps < 1 \
                or self.batch_size < 1 or self.vocab_size < 300 or self.hidden_size % self.num_heads \
                or self.num_heads % self.num_kv_heads:
            raise ValueError(f"SokobanAgentSpec: invalid spec {self}")


def make_spec(**overrides: Any) -> SokobanAgentSpec:
    unknown = set(overrides) - set(SokobanAgentSpec.__dataclass_fields__)
    if unknown:
        raise ValueError(f"SokobanAgentSpec: unknown field(s) {sorted(unknown)}")
    if "env_options" in overrides:
        opts = overrides["env_options"]
        overrides["env_options"] = tuple(sorted((dict(opts) if not isinstance(opts, dict) else opts).items()))
    spec = SokobanAgentSpec(**overrides)
    spec.validate()
    return spec


def spec_json(spec: SokobanAgentSpec) -> dict:
    return json.loads(json.dumps(asdict(spec)))


# ============================================================================ prompts (as the loops render)


def planner_prompt(reset, spec: SokobanAgentSpec) -> str:
    """``himac_loop._macro_episode``'s planner prompt text."""
    from himac_verl.agent.prompts import format_admissible, load_template, render

    obs = reset.observation
    return render(load_template("sokoban", "planner"), instruction=reset.instruction, observation=obs.text,
                  admissible=format_admissible(obs.admissible_actions), max_subgoals=spec.max_subgoals,
                  max_steps=spec.max_env_steps, legend=reset.info.get("legend") or "", step=1)


def executor_prompt(reset, blueprint, k: int, segment: list, obs, step_no: int, spec: SokobanAgentSpec) -> str:
    """``himac_loop._execute``'s executor prompt text (the whole segment shown: it always fits)."""
    from himac_verl.agent.prompts import (executor_template, format_admissible, format_history, format_moves,
                                          render)

    shown = list(segment)
    return render(executor_template("sokoban", True), instruction=reset.instruction, blueprint=blueprint.render(),
                  subgoal_number=k + 1, num_subgoals=blueprint.num_subgoals, subgoal=blueprint.subgoals[k],
                  history=format_history(shown, step_no - len(shown)), history_count=len(shown),
                  moves=format_moves(shown), observation=obs.text,
                  admissible=format_admissible(obs.admissible_actions), step=step_no,
                  max_steps=spec.max_env_steps, legend=reset.info.get("legend") or "")


def flat_prompt(reset, history: list, obs, step_no: int, spec: SokobanAgentSpec) -> str:
    """``flat_loop``'s prompt text (the last ``flat_history_turns`` steps)."""
    from himac_verl.agent.prompts import format_admissible, format_history, format_moves, load_template, render

    k = spec.flat_history_turns
    shown = history[len(history) - k:] if k else []
    return render(load_template("sokoban", "flat"), instruction=reset.instruction,
                  history=format_history(shown, step_no - len(shown)), history_count=len(shown),
                  moves=format_moves(shown), observation=obs.text,
                  admissible=format_admissible(obs.admissible_actions), step=step_no,
                  max_steps=spec.max_env_steps, legend=reset.info.get("legend") or "")


def plan_target(subgoals: list[str], closed: bool = True) -> str:
    from himac_verl.agent.blueprint import Blueprint

    text = "<plan>\n" + Blueprint(tuple(subgoals)).render() + "\n"
    return text + "</plan>" if closed else text


def action_target(move: str, sub_done: bool = False) -> str:
    return f"<action>{move}</action>" + (SUB_DONE if sub_done else "")


# ============================================================================ data


@dataclass
class TextExample:
    role: str  # planner | executor | flat
    prompt: str  # the user message (rendered template)
    target: str  # the response text (eos appended at encoding)
    noise: dict[str, bool] = field(default_factory=dict)  # which noise draws hit this example
    point: tuple[int, ...] = ()  # board cells (flat indices) the response points at first (POINTERS[role])


def _make_env(spec: SokobanAgentSpec):
    from himac_verl.envs.sokoban.env import SokobanEnv

    return SokobanEnv(max_steps=spec.max_env_steps, **spec.env_kwargs())


def _level_plan(env, split: str, task_id: int):
    """(reset, level, optimal plan) of a task under the env's generator options."""
    from himac_verl.envs.base import TaskSpec
    from himac_verl.envs.sokoban.env import level_seed
    from himac_verl.envs.sokoban.generator import generate_level

    reset = env.reset(TaskSpec("sokoban", split, str(task_id)))
    level, plan = generate_level(level_seed(split, task_id), env.generator)
    return reset, level, plan


def oracle_subgoals(level, plan) -> list[str]:
    from himac_verl.envs.sokoban.subgoals import plan_subgoals

    return [g.text() for g in plan_subgoals(level, plan)]


def noisy_plan(subgoals: list[str], rng: random.Random, spec: SokobanAgentSpec,
               allow_malformed: bool = True) -> tuple[list[str], bool, dict[str, bool]]:
    """(subgoals, closed, noise flags): at most one of wrong / missing / extra / malformed (docstring)."""
    goals = list(subgoals)
    noise = {"wrong_push": False, "missing_push": False, "extra_push": False, "malformed": False}
    u = rng.random()
    edges = [spec.plan_wrong_push_prob, spec.plan_missing_push_prob, spec.plan_extra_push_prob,
             spec.plan_malformed_prob if allow_malformed else 0.0]
    if u < edges[0]:
        i = rng.randrange(len(goals))
        old = goals[i].rsplit(" ", 1)[-1]
        goals[i] = f"push the box {rng.choice([d for d in DIRECTIONS if d != old])}"
        noise["wrong_push"] = True
    elif u < sum(edges[:2]):
        if len(goals) >= 2:
            del goals[rng.randrange(len(goals))]
            noise["missing_push"] = True
    elif u < sum(edges[:3]):
        if len(goals) < spec.max_subgoals:
            goals.insert(rng.randrange(len(goals) + 1), f"push the box {rng.choice(DIRECTIONS)}")
            noise["extra_push"] = True
    elif u < sum(edges):
        noise["malformed"] = True
    return goals, not noise["malformed"], noise


def planner_example(reset, level, plan, rng: random.Random, spec: SokobanAgentSpec) -> TextExample:
    goals, closed, noise = noisy_plan(oracle_subgoals(level, plan), rng, spec)
    return TextExample("planner", planner_prompt(reset, spec), plan_target(goals, closed), noise,
                       (level.player, next(iter(level.boxes)), next(iter(level.targets))))


def _other(move: str, rng: random.Random) -> str:
    return rng.choice([d for d in DIRECTIONS if d != move])


def executor_episode(env, reset, level, plan, rng: random.Random, spec: SokobanAgentSpec) -> list[TextExample]:
    """One executor episode under the loop's rules (blueprint: oracle, or noised with
    ``executor_noisy_plan_prob``); stops where the active subgoal admits no consistent move."""
    from himac_verl.agent.blueprint import Blueprint
    from himac_verl.agent.prompts import HistoryEntry
    from himac_verl.envs.sokoban.subgoals import BoardState, completes, expert_move, goal_cell, parse_subgoal

    goals = oracle_subgoals(level, plan)
    noisy = rng.random() < spec.executor_noisy_plan_prob
    if noisy:
        goals, _, _ = noisy_plan(goals, rng, spec, allow_malformed=False)
    blueprint = Blueprint(tuple(goals))
    parsed = [parse_subgoal(g) for g in goals]
    state, obs = BoardState.start(level), reset.observation
    k, segment, steps_on_subgoal, last = 0, [], 0, len(goals) - 1
    out = []
    for step in range(spec.max_env_steps):
        expert = expert_move(state, parsed[k])
        if expert is None:
            break
        move_noise = rng.random() < spec.executor_move_noise_prob
        move = _other(expert, rng) if move_noise else expert
        done_true = completes(state, move, parsed[k])
        omit = done_true and rng.random() < spec.sub_done_omit_prob
        spurious = not done_true and rng.random() < spec.sub_done_spurious_prob
        tag = (done_true and not omit) or spurious
        text = executor_prompt(reset, blueprint, k, segment, obs, step + 1, spec)
        out.append(TextExample("executor", text, action_target(move, tag),
                               {"noisy_plan": noisy, "move": move_noise, "sub_done_omitted": omit,
                                "sub_done_spurious": spurious, "completes": done_true},
                               (state.player, state.box, goal_cell(state, parsed[k]))))
        result = env.step(move)
        state, _ = state.step(move)
        segment.append(HistoryEntry(obs.text, move))
        steps_on_subgoal += 1
        obs = result.observation
        if result.done:
            break
        if k < last and (done_true or steps_on_subgoal >= spec.subgoal_step_budget):
            k, segment, steps_on_subgoal = k + 1, [], 0
    return out


def _solver_move(level, state) -> str | None:
    """The solver's first optimal move from a one-box position (None: unsolvable / solved)."""
    from himac_verl.envs.sokoban.level import Level
    from himac_verl.envs.sokoban.solver import solve

    here = Level(level.height, level.width, level.walls, level.targets, frozenset({state.box}), state.player)
    plan = solve(here)
    return plan[0] if plan else None


def flat_episode(env, reset, level, rng: random.Random, spec: SokobanAgentSpec) -> list[TextExample]:
    from himac_verl.agent.prompts import HistoryEntry
    from himac_verl.envs.sokoban.subgoals import BoardState

    state, obs, history, out = BoardState.start(level), reset.observation, [], []
    for step in range(spec.max_env_steps):
        expert = _solver_move(level, state)
        if expert is None:
            break
        move_noise = rng.random() < spec.flat_move_noise_prob
        move = _other(expert, rng) if move_noise else expert
        out.append(TextExample("flat", flat_prompt(reset, history, obs, step + 1, spec), action_target(move),
                               {"move": move_noise}, (state.player, state.box, next(iter(level.targets)))))
        result = env.step(move)
        state, _ = state.step(move)
        history.append(HistoryEntry(obs.text, move))
        obs = result.observation
        if result.done:
            break
    return out


def make_text_examples(spec: SokobanAgentSpec, split: str = "train", first_task: int = 0) -> list[TextExample]:
    """``planner_examples`` + ``executor_examples`` + ``flat_examples`` examples from consecutive tasks of
    ``split`` (task ids from ``first_task``): one planner example per level, one executor and one flat
    episode per level until each role has its count."""
    rng = random.Random(f"sokoban-agent-data|{spec.seed}|{split}|{first_task}")
    env = _make_env(spec)
    need = {"planner": spec.planner_examples, "executor": spec.executor_examples, "flat": spec.flat_examples}
    got: dict[str, list[TextExample]] = {r: [] for r in need}
    task = first_task
    while any(len(got[r]) < need[r] for r in need):
        reset, level, plan = _level_plan(env, split, task)
        if len(got["planner"]) < need["planner"]:
            got["planner"].append(planner_example(reset, level, plan, rng, spec))
        if len(got["executor"]) < need["executor"]:
            reset, level, plan = _level_plan(env, split, task)
            got["executor"].extend(executor_episode(env, reset, level, plan, rng, spec))
        if len(got["flat"]) < need["flat"]:
            reset, level, plan = _level_plan(env, split, task)
            got["flat"].extend(flat_episode(env, reset, level, rng, spec))
        task += 1
    return [ex for r in need for ex in got[r][:need[r]]]


# ============================================================================ tokenizer


def chat_prefix_suffix() -> tuple[str, str]:
    """The ChatML text around a one-user-message prompt with the generation prompt."""
    return "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"


CELL_CODE_BASE = 0xE000  # private-use code points of the position-coded board cells


def cell_char(row: int, col: int, width: int, symbol: str) -> str:
    """The private-use character that stands for ``symbol`` at interior cell (row, col) inside the tokenizer."""
    return chr(CELL_CODE_BASE + (row * width + col) * 8 + BOARD_SYMBOLS.index(symbol))


def cell_chars(height: int, width: int) -> dict[str, str]:
    """Every position-coded cell character -> the board symbol it stands for."""
    return {cell_char(r, c, width, s): s for r in range(1, height - 1) for c in range(1, width - 1)
            for s in BOARD_SYMBOLS}


def board_normalizer(height: int, width: int):
    """Rewrites each INTERIOR cell of a board (a block of ``height`` rows of ``width`` board symbols whose
    first column and last row are walls, the layout of ``SokobanEnv.grid_text``) into its cell character.
    A cell is recognised by its context alone: the row's wall and ``col - 1`` symbols before it, the rest of
    its row and ``height - 2 - row`` more rows after it, then the all-wall bottom row and the end of the
    board (a newline not followed by a board symbol, or the end of the text). Text outside a board (the
    legend, targets) is left alone."""
    from tokenizers import Regex, normalizers

    last = chr(CELL_CODE_BASE + height * width * 8)
    sym = "[" + "".join(re.escape(s) for s in BOARD_SYMBOLS) + f"{chr(CELL_CODE_BASE)}-{last}]"
    rules = []
    for r in range(1, height - 1):
        for c in range(1, width - 1):
            for s in BOARD_SYMBOLS:
                pattern = (f"(?<=\\n#{sym}{{{c - 1}}}){re.escape(s)}(?={sym}{{{width - 1 - c}}}\\n"
                           f"(?:{sym}{{{width}}}\\n){{{height - 2 - r}}}#{{{width}}}(?:\\n(?!{sym})|$))")
                rules.append(normalizers.Replace(Regex(pattern), cell_char(r, c, width, s)))
    return normalizers.Sequence(rules)


def train_tokenizer(texts: list[str], vocab_size: int, height: int = 6, width: int = 6):
    """The project's tokenizer (module docstring): byte-level BPE over the isolating pre-tokenizer, ChatML
    specials (ids 0, 1, 2), and one token per POSITION-CODED board cell.

    The BPE is learnt on the plain texts; then the board normalizer (``board_normalizer``) maps each
    interior cell of a board to a private-use character that is one added token (symbol x row x column),
    and the decoder maps those characters back to their symbols, so ``decode(encode(text)) == text``.
    Outside a board (and on its border walls) the symbols are their own plain tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from himac_verl.models.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_pretoken_pattern()), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    cells = cell_chars(height, width)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(cells), special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.normalizer = board_normalizer(height, width)
    tok.add_tokens([AddedToken(ch, normalized=True, special=False, single_word=False, lstrip=False, rstrip=False)
                    for ch in cells])
    back = [decoders.Replace(Regex("[" + "".join(ch for ch, s in cells.items() if s == symbol) + "]"), symbol)
            for symbol in BOARD_SYMBOLS]
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), *back])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, chat_template=CHATML_TEMPLATE,
                                   clean_up_tokenization_spaces=False)


TOKENIZER_MODULE = "tokenization_himac_sokoban"
TOKENIZER_CLASS = "SokobanAgentTokenizer"


def save_tokenizer(tokenizer, path: str | os.PathLike):
    """Save ``tokenizer`` so that ``AutoTokenizer.from_pretrained(path)`` gives back EXACTLY this pipeline, and
    return that reloaded tokenizer.

    Why: for ``model_type == "qwen2"`` transformers 5 ignores ``tokenizer.json``'s normalizer and
    pre-tokenizer and rebuilds a ``Qwen2Tokenizer`` from the vocabulary and merges (NFC + Qwen's split
    regex), which would tokenize our prompts differently from the training. An ``auto_map`` entry in
    ``tokenizer_config.json`` makes ``AutoTokenizer`` (and so verl's ``hf_tokenizer``) load the generic
    ``TokenizersBackend`` from ``tokenizer.json`` as written; with ``trust_remote_code=True`` it loads the
    two-line subclass written beside it, which does the same."""
    from transformers import AutoTokenizer

    path = Path(path)
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoTokenizer": [None, f"{TOKENIZER_MODULE}.{TOKENIZER_CLASS}"]}
    config_file.write_text(json.dumps(config, indent=2))
    (path / f"{TOKENIZER_MODULE}.py").write_text(
        "from transformers.tokenization_utils_tokenizers import TokenizersBackend\n\n\n"
        f"class {TOKENIZER_CLASS}(TokenizersBackend):\n"
        '    """The Sokoban agent\'s tokenizer: tokenizer.json as written (himac_verl.models.sokoban_agent)."""\n')
    return AutoTokenizer.from_pretrained(path)


@dataclass(frozen=True)
class Example:
    role: str
    prompt_ids: list[int]
    response_ids: list[int]
    board: tuple[int, int] = (0, 0)  # [start, end) of the board's tokens in prompt_ids (the grid, its newlines)


def board_span(prompt_ids: list[int], grid_ids: set[int], min_len: int) -> tuple[int, int]:
    """The longest run of board-symbol / newline tokens (the board; the legend's symbols stand alone)."""
    best, start = (0, 0), None
    for i, t in enumerate(list(prompt_ids) + [-1]):
        if t in grid_ids:
            start = i if start is None else start
        elif start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best if best[1] - best[0] >= min_len else (0, 0)


def grid_token_ids(tokenizer) -> set[int]:
    """Ids of the plain board symbols, the newline and every position-coded cell."""
    plain = {tokenizer.convert_tokens_to_ids(tokenizer.tokenize(s))[0] for s in BOARD_SYMBOLS + ("\n",)}
    coded = {i for t, i in tokenizer.get_vocab().items()
             if len(t) == 1 and CELL_CODE_BASE <= ord(t) < CELL_CODE_BASE + 0x1000}
    return plain | coded


class PromptEncoder:
    """Prompt ids exactly as the loops build them (verl's continuous-token builder on one user message),
    computed fast: chat prefix ids + the content's ids + suffix ids (checked against the builder on a
    sample: the pre-tokenizer isolates ``\\n`` and the specials split, so the pieces tokenize alone)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        pre, suf = chat_prefix_suffix()
        self.prefix = tokenizer(pre, add_special_tokens=False)["input_ids"]
        self.suffix = tokenizer(suf, add_special_tokens=False)["input_ids"]
        self._builder = None

    def builder_ids(self, text: str) -> list[int]:
        if self._builder is None:
            from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

            self._builder = create_continuous_token_builder(self.tokenizer, hf_model_type="qwen2")
        return list(self._builder.build_initial_tokens([{"role": "user", "content": text}]))

    def encode(self, texts: list[str], check: int = 32) -> list[list[int]]:
        contents = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out = [self.prefix + list(c) + self.suffix for c in contents]
        for i in range(0, len(texts), max(1, len(texts) // check)):
            want = self.builder_ids(texts[i])
            if out[i] != want:
                raise AssertionError(f"fast prompt encoding differs from verl's builder on {texts[i]!r}")
        return out


# What each role's response points at before its action / plan (module docstring): the board cells of
# the player, the box, and the target (planner, flat) or the active subgoal's goal cell (executor).
POINTERS: dict[str, tuple[str, ...]] = {"planner": ("player", "box", "target"),
                                        "executor": ("player", "box", "goal"),
                                        "flat": ("player", "box", "target")}


def pointer_ids(prompt_ids: list[int], board: tuple[int, int], cells: tuple[int, ...], width: int,
                newline_id: int) -> list[int]:
    """The prompt's own tokens of the given board cells (flat indices; the board is a grid of one token per
    cell, rows separated by one newline token)."""
    start = board[0] + (prompt_ids[board[0]] == newline_id)
    out = []
    for cell in cells:
        i = start + (cell // width) * (width + 1) + cell % width
        if not board[0] <= i < board[1]:
            raise ValueError(f"cell {cell} lies outside the board span {board}")
        out.append(prompt_ids[i])
    return out


def encode_examples(tokenizer, examples: list[TextExample], pointers: bool = True, width: int = 6) -> list[Example]:
    """Token ids of the examples: prompts as the loops build them; responses = the pointer tokens (when
    ``pointers``: the prompt's tokens of ``example.point``'s cells) + the target's tokens + eos."""
    prompts = PromptEncoder(tokenizer).encode([e.prompt for e in examples])
    eos = tokenizer.eos_token_id
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    grid = grid_token_ids(tokenizer)
    newline = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("\n"))[0]
    out = []
    for e, p, t in zip(examples, prompts, targets):
        board = board_span(p, grid, 12)
        ptr = pointer_ids(p, board, e.point, width, newline) if pointers else []
        out.append(Example(e.role, p, ptr + list(t) + [eos], board))
    return out


# ============================================================================ model and SFT


def make_model(spec: SokobanAgentSpec, tokenizer):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, max_position_embeddings=2048, rope_theta=spec.rope_theta, tie_word_embeddings=True,
        initializer_range=0.02, bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32")
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    init_cell_embeddings(model, tokenizer, spec)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def init_cell_embeddings(model, tokenizer, spec: SokobanAgentSpec) -> int:
    """Factorised start for the position-coded cell tokens: embedding(symbol, row, col) = S[symbol] + R[row]
    + C[col] with S, R, C random (the initializer's scale), so the row and column of every cell are
    linearly readable from the first step (they are then trained freely). Returns the tokens set."""
    import torch

    height, width = spec.board_shape()
    emb = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(spec.seed + 1)
    std = model.config.initializer_range

    def draw(n):
        return torch.randn(n, emb.shape[1], generator=gen) * std

    sym, rows, cols = draw(len(BOARD_SYMBOLS)), draw(height), draw(width)
    vocab, done = tokenizer.get_vocab(), 0
    with torch.no_grad():
        for r in range(1, height - 1):
            for c in range(1, width - 1):
                for k, s in enumerate(BOARD_SYMBOLS):
                    tid = vocab.get(cell_char(r, c, width, s))
                    if tid is not None:
                        emb[tid] = sym[k] + rows[r] + cols[c]
                        done += 1
    return done


def _batches(examples: list[Example], spec: SokobanAgentSpec, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then sorted by length inside windows of 32 batches (little padding),
    then the batches shuffled."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = 32 * spec.batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window],
                       key=lambda i: len(examples[i].prompt_ids) + len(examples[i].response_ids))
        batches += [chunk[j:j + spec.batch_size] for j in range(0, len(chunk), spec.batch_size)]
    rng.shuffle(batches)
    return [b for b in batches if len(b) == spec.batch_size] or batches


def fine_tune(model, examples: list[Example], spec: SokobanAgentSpec, pad_id: int, log=None) -> list[float]:
    """AdamW on the RESPONSE tokens only (prompt tokens masked with -100), warm-up then cosine decay,
    gradient clipping; returns the loss per step (a progress line every ``spec.steps // 10`` steps).

    Rows are right-padded and run without an attention mask: causal attention never lets a real token see
    a pad and pads carry no label (sdpa's fast causal path)."""
    import torch

    rng = random.Random(f"sokoban-agent-sft|{spec.seed}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return spec.lr * (step + 1) / spec.warmup_steps
        frac = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    losses, queue, t0 = [], [], time.perf_counter()
    every = max(1, spec.steps // 10)
    for step in range(spec.steps):
        if not queue:
            queue = _batches(examples, spec, rng)
        idx = queue.pop()
        width = max(len(examples[i].prompt_ids) + len(examples[i].response_ids) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            p, r = examples[i].prompt_ids, examples[i].response_ids
            ids[row, : len(p) + len(r)] = torch.tensor(p + r)
            labels[row, len(p): len(p) + len(r)] = torch.tensor(r)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % every == 0 and log is not None:
            log(f"  sft step {step + 1}/{spec.steps}: response loss {sum(losses[-every:]) / every:.4f} "
                f"lr {lr_at(step):.2e} ({time.perf_counter() - t0:.0f}s)")
    model.eval()
    return losses


# ============================================================================ measurement (the real loops)


def _board_of_planner_prompt(text: str) -> str | None:
    """The board inside a rendered planner prompt (between the legend line and the instruction line)."""
    head, sep, rest = text.partition("):\n")
    if not sep:
        return None
    board, sep, _ = rest.partition("\nWrite a plan")
    return board if sep else None


class OraclePlannerServer:
    """A rollout server for the loops whose PLANNER turns answer with the oracle blueprint of the level
    shown (looked up by its board) and whose other turns go to ``inner`` (the model): the real HiMAC loop
    then executes ORACLE blueprints with the model's executor."""

    def __init__(self, inner, tokenizer, plans: dict[str, str]):
        self.inner, self.tokenizer, self.plans = inner, tokenizer, plans

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
        if "You are the planner" in text:
            board = _board_of_planner_prompt(text)
            ids = self.tokenizer(self.plans[board], add_special_tokens=False)["input_ids"]
            return TokenOutput(token_ids=list(ids) + [self.tokenizer.eos_token_id], stop_reason="completed",
                               extra_fields={"global_steps": None})
        return await self.inner.generate(request_id=request_id, prompt_ids=prompt_ids,
                                         sampling_params=sampling_params, image_data=image_data, **kwargs)


def random_mover_success(spec: SokobanAgentSpec, num_levels: int, trials: int = 16, split: str = "test") -> float:
    """Success of uniformly random moves over ``max_env_steps`` steps (``trials`` episodes per level)."""
    from himac_verl.envs.base import TaskSpec

    env, rng, won = _make_env(spec), random.Random(f"random-mover|{spec.seed}"), 0
    for i in range(num_levels):
        for _ in range(trials):
            env.reset(TaskSpec("sokoban", split, str(i)))
            for _ in range(spec.max_env_steps):
                result = env.step(rng.choice(DIRECTIONS))
                if result.done:
                    won += bool(result.won)
                    break
    return won / (num_levels * trials)


def _turn_state(anchor: str):
    from himac_verl.envs.sokoban.level import Level
    from himac_verl.envs.sokoban.subgoals import BoardState

    level = Level.from_text(anchor)
    return BoardState(level, next(iter(level.boxes)), level.player)


def following_stats(outputs_per_call: list[list], subgoals_per_call: list[list[str] | None],
                    tokenizer) -> dict[str, float]:
    """Executor turns of HiMAC calls: subgoal-following rate (the turn's move is in ``consistent_moves`` of
    the active subgoal; turns whose subgoal admits no consistent move are counted apart) and ``<sub_done>``
    precision/recall against ``completes``."""
    from himac_verl.agent.blueprint import declares_sub_done
    from himac_verl.envs.sokoban.subgoals import completes, consistent_moves, parse_subgoal

    turns = follow = no_move = tp = fp = fn = 0
    for outputs, goals in zip(outputs_per_call, subgoals_per_call):
        if not goals:
            continue
        parsed = [parse_subgoal(g) for g in goals]
        for out in outputs:
            extra = out.extra_fields
            if extra["role"] != "executor":
                continue
            subgoal = parsed[extra["subgoal_index"]]
            if subgoal is None:
                continue
            state, move = _turn_state(extra["anchor"]), extra["env_action"]
            allowed = consistent_moves(state, subgoal)
            text = tokenizer.decode(out.response_ids, skip_special_tokens=True)
            declared = declares_sub_done(text)
            done = move is not None and completes(state, move, subgoal)
            tp, fp, fn = tp + (declared and done), fp + (declared and not done), fn + (done and not declared)
            if not allowed:
                no_move += 1
                continue
            turns += 1
            follow += move in allowed
    return {"following_rate": follow / max(1, turns), "following_turns": turns, "no_consistent_move_turns": no_move,
            "sub_done_precision": tp / max(1, tp + fp), "sub_done_recall": tp / max(1, tp + fn),
            "sub_done_declared": tp + fp, "sub_done_due": tp + fn}


def measure(path: str | os.PathLike, num_levels: int = 128, spec: SokobanAgentSpec | None = None,
            log=None) -> dict[str, Any]:
    """Greedy held-out metrics on ``test`` tasks 0..num_levels-1 through the real loops (module docstring)."""
    import torch
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from himac_verl.agent.blueprint import BlueprintParseError, parse_blueprint
    from himac_verl.agent.flat_loop import FlatAgentLoop
    from himac_verl.agent.himac_loop import HiMACAgentLoop
    from himac_verl.agent.testing import InProcessPool, base_config, make_loop, pool_factory
    from himac_verl.rollout.server import HFCpuServer

    path = str(path)
    if spec is None:
        spec = make_spec(**json.loads((Path(path) / MARKER).read_text())["spec"])
    say = log or (lambda msg: None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt_length, response_length = 512, 48
    rollout = SimpleNamespace(prompt_length=prompt_length, response_length=response_length, max_model_len=None,
                              max_num_seqs=3 * num_levels, seed=spec.seed, engine_kwargs={})
    server = HFCpuServer(rollout, SimpleNamespace(local_path=path, tokenizer=tokenizer, processor=None))
    params = sum(p.numel() for p in server.engine.model.parameters())
    env_kwargs = spec.env_kwargs()
    cfg = base_config(group_size=1, env_kwargs=env_kwargs,
                      agent={"max_env_steps": spec.max_env_steps, "subgoal_step_budget": spec.subgoal_step_budget,
                             "max_subgoals": spec.max_subgoals, "flat_history_turns": spec.flat_history_turns})
    cfg["actor_rollout_ref"]["rollout"].update(prompt_length=prompt_length, response_length=response_length)
    env = _make_env(spec)
    plans, oracle = {}, []
    for i in range(num_levels):
        reset, level, plan = _level_plan(env, "test", i)
        goals = oracle_subgoals(level, plan)
        plans[reset.observation.text] = plan_target(goals)
        oracle.append(goals)
    pool = InProcessPool(lambda: _make_env(spec))
    rows = [{"himac_env": "sokoban", "himac_split": "test", "himac_task_id": str(i), "himac_phase": "eval"}
            for i in range(num_levels)]
    greedy = {"temperature": 0.0, "logprobs": False}

    async def run_all():
        himac = make_loop(HiMACAgentLoop, tokenizer, server, cfg)
        flat = make_loop(FlatAgentLoop, tokenizer, server, cfg)
        with_oracle = make_loop(HiMACAgentLoop, tokenizer, OraclePlannerServer(server, tokenizer, plans), cfg)
        results = {}
        for name, loop in (("himac", himac), ("flat", flat), ("oracle", with_oracle)):
            t0 = time.perf_counter()
            results[name] = await asyncio.gather(*(loop.run(dict(greedy), **row) for row in rows))
            results[name + "_s"] = time.perf_counter() - t0
            say(f"  measure: {name} episodes done ({results[name + '_s']:.0f}s)")
        return results

    threads = torch.get_num_threads()
    with pool_factory(pool):
        res = asyncio.run(run_all())
    torch.set_num_threads(threads)

    def won(outputs) -> bool:
        return bool(outputs) and bool(outputs[0].extra_fields["won"])

    own_plans, parsed = [], 0
    for outputs in res["himac"]:
        planner = [o for o in outputs if o.extra_fields["role"] == "planner"]
        text = tokenizer.decode(planner[0].response_ids, skip_special_tokens=True) if planner else ""
        try:
            own_plans.append(list(parse_blueprint(text, spec.max_subgoals).subgoals))
            parsed += 1
        except BlueprintParseError:
            own_plans.append(None)
    exact = sum(p == g for p, g in zip(own_plans, oracle))
    follow = following_stats(res["oracle"], oracle, tokenizer)
    follow_own = following_stats(res["himac"], own_plans, tokenizer)
    lengths: dict[str, list[int]] = {"planner": [], "executor": [], "flat": []}
    responses: dict[str, list[int]] = {"planner": [], "executor": [], "flat": []}
    for name in ("himac", "flat", "oracle"):
        for outputs in res[name]:
            for o in outputs:
                if name == "oracle" and o.extra_fields["role"] == "planner":
                    continue
                lengths[o.extra_fields["role"]].append(len(o.prompt_ids))
                responses[o.extra_fields["role"]].append(len(o.response_ids))
    gen_tokens = sum(sum(v) for v in responses.values())
    gen_s = res["himac_s"] + res["flat_s"] + res["oracle_s"]
    n_calls = sum(len(v) for v in responses.values())
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    return {
        "num_levels": num_levels,
        "parse_rate": parsed / num_levels,
        "plan_exact_rate": exact / num_levels,
        "himac_success": mean([won(o) for o in res["himac"]]), "himac_wins": sum(won(o) for o in res["himac"]),
        "flat_success": mean([won(o) for o in res["flat"]]), "flat_wins": sum(won(o) for o in res["flat"]),
        "oracle_plan_success": mean([won(o) for o in res["oracle"]]),
        "oracle_plan_wins": sum(won(o) for o in res["oracle"]),
        **follow,
        "following_rate_own_plans": follow_own["following_rate"],
        "random_mover_success": random_mover_success(spec, num_levels),
        "params": params,
        "prompt_tokens": {r: round(mean(v), 1) for r, v in lengths.items()},
        "response_tokens": {r: round(mean(v), 2) for r, v in responses.items()},
        "generate_calls": n_calls,
        "generated_tokens_per_s": gen_tokens / max(1e-9, gen_s),
        "generate_calls_per_s": n_calls / max(1e-9, gen_s),
        "measure_s": gen_s,
    }


# ============================================================================ build


def tokenizer_corpus(examples: list[TextExample]) -> list[str]:
    """What the BPE learns from: every 8th prompt, every target, the chat wrapper."""
    return [e.prompt for e in examples[::8]] + [e.target for e in examples] + list(chat_prefix_suffix())


def default_path() -> Path:
    from himac_verl.paths import cache_dir

    return cache_dir() / "models" / "sokoban_agent"


def _cached(marker: Path, wanted: dict) -> bool:
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("spec") == wanted
    except (OSError, ValueError):
        return False


def build_sokoban_agent(path: str | os.PathLike | None = None, *, levels: int = 128, log=None,
                        **spec_overrides: Any) -> str:
    """Build (or reuse) the starting model at ``path`` (default ``cache_dir()/sokoban_agent``) and return
    ``str(path)``. ``spec_overrides`` are :class:`SokobanAgentSpec` fields; ``levels`` is the number of
    held-out test levels ``measure`` uses (0 skips the measurement). The main job's ``himac.model=sokoban_agent``
    builds the default spec here. The marker ``himac_sokoban_agent.json``
    holds the spec, the timings and the measured numbers; a second call with the same spec returns at once.
    Built beside the target and moved in at the end, so concurrent callers never see half a model."""
    import torch

    spec = make_spec(**spec_overrides)
    path = Path(path) if path is not None else default_path()
    wanted = spec_json(spec)
    marker = path / MARKER
    if _cached(marker, wanted):
        return str(path)
    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.num_threads)
    try:
        work = path.with_name(f"{path.name}.building-{os.getpid()}")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        timings = {}
        t0 = time.perf_counter()
        texts = make_text_examples(spec)
        timings["data_s"] = time.perf_counter() - t0
        counts = {r: sum(e.role == r for e in texts) for r in ("planner", "executor", "flat")}
        say(f"[data] {len(texts)} examples {counts} from train levels ({timings['data_s']:.1f}s)")
        t0 = time.perf_counter()
        tokenizer = train_tokenizer(tokenizer_corpus(texts), spec.vocab_size, *spec.board_shape())
        tokenizer = save_tokenizer(tokenizer, work)  # reloaded exactly as the loops and verl load it
        examples = encode_examples(tokenizer, texts, spec.pointers, spec.board_shape()[1])
        timings["tokenizer_s"] = time.perf_counter() - t0
        say(f"[tokenizer] vocabulary {len(tokenizer)}; prompt tokens "
            + ", ".join(f"{r} {sum(len(e.prompt_ids) for e in examples if e.role == r) / max(1, counts[r]):.0f}"
                        for r in counts) + f" ({timings['tokenizer_s']:.1f}s)")
        model = make_model(spec, tokenizer)
        params = sum(p.numel() for p in model.parameters())
        say(f"[sft] Qwen2 {params:,} parameters, {spec.steps} steps x {spec.batch_size} examples")
        t0 = time.perf_counter()
        losses = fine_tune(model, examples, spec, tokenizer.pad_token_id, log=say)
        timings["sft_s"] = time.perf_counter() - t0
        model.save_pretrained(work)
        tail = losses[-max(1, spec.steps // 10):]
        record: dict[str, Any] = {"spec": wanted, "params": params, "final_response_loss": sum(tail) / len(tail),
                                  "timings": timings}
        if levels:
            say(f"[measure] {levels} held-out test levels through the real loops")
            t0 = time.perf_counter()
            record["metrics"] = measure(work, levels, spec, log=say)
            timings["measure_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_start
        record["load_average"] = os.getloadavg()
        (work / MARKER).write_text(json.dumps(record, indent=1))
    finally:
        torch.set_num_threads(threads)
    if _cached(marker, wanted):
        shutil.rmtree(work, ignore_errors=True)  # a racing caller finished first: keep its build in place
        return str(path)
    if path.exists():  # a stale build (other spec)
        shutil.rmtree(path, ignore_errors=True)
    try:
        os.replace(work, path)
    except OSError:  # a racing caller moved its build in first: same spec, keep it
        shutil.rmtree(work, ignore_errors=True)
    return str(path)


def format_table(record: dict) -> str:
    m, t = record.get("metrics", {}), record.get("timings", {})
    rows = [("parameters", f"{record.get('params', 0):,}"),
            ("final SFT response loss", f"{record.get('final_response_loss', float('nan')):.4f}")]
    if m:
        n = m["num_levels"]
        rows += [
            ("planner parse rate (greedy)", f"{m['parse_rate']:.1%}"),
            ("planner exact oracle plan", f"{m['plan_exact_rate']:.1%}"),
            ("executor following (oracle plans)", f"{m['following_rate']:.1%} of {m['following_turns']} turns "
                                                  f"(+{m['no_consistent_move_turns']} with no consistent move)"),
            ("executor following (own plans)", f"{m['following_rate_own_plans']:.1%}"),
            ("<sub_done> precision / recall", f"{m['sub_done_precision']:.1%} / {m['sub_done_recall']:.1%}"),
            ("HiMAC greedy success", f"{m['himac_success']:.1%} ({m['himac_wins']}/{n})"),
            ("flat greedy success", f"{m['flat_success']:.1%} ({m['flat_wins']}/{n})"),
            ("oracle plan + model executor success", f"{m['oracle_plan_success']:.1%} ({m['oracle_plan_wins']}/{n})"),
            ("random mover success", f"{m['random_mover_success']:.1%}"),
            ("prompt tokens planner/executor/flat", "/".join(str(m["prompt_tokens"][r])
                                                             for r in ("planner", "executor", "flat"))),
            ("response tokens planner/executor/flat", "/".join(str(m["response_tokens"][r])
                                                               for r in ("planner", "executor", "flat"))),
            ("generation (loops, greedy)", f"{m['generated_tokens_per_s']:.0f} tokens/s, "
                                           f"{m['generate_calls_per_s']:.1f} turns/s"),
        ]
    rows += [("build time", " + ".join(f"{k[:-2]} {v:.0f}s" for k, v in t.items() if k != "total_s")
              + f" = {t.get('total_s', 0):.0f}s"),
             ("load average at the end", ", ".join(f"{x:.2f}" for x in record.get("load_average", ())))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="model folder (default: cache_dir()/models/sokoban_agent, "
                                                    "the main job's)")
    parser.add_argument("--levels", type=int, default=128, help="held-out test levels measured (0: none)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                        help="spec overrides, e.g. steps=600 lr=0.003 'env_options={\"min_moves\": 4}'")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}" if msg.startswith("[") else msg, flush=True)

    path = build_sokoban_agent(args.out, levels=args.levels, log=say, **overrides)
    record = json.loads((Path(path) / MARKER).read_text())
    print(f"model: {path}")
    print(f"env options (himac.env_kwargs): {json.dumps(record['spec']['env_options'])}; "
          f"himac.agent.subgoal_step_budget={record['spec']['subgoal_step_budget']}")
    print(format_table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
