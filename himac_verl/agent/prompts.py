"""Prompt templates (versioned text files per env and role) and the pieces that fill them.

Templates live in ``himac_verl/agent/templates/<env>/<role>.<version>.txt`` (roles: planner, executor,
flat) and are ``string.Template`` texts (``$name`` placeholders; ``$$`` for a literal dollar). They are
loaded with importlib.resources so they ship inside the wheel; a changed prompt gets a new version file
rather than an edit, so a run's config names exactly the prompt it trained with.

Placeholders every role gets: ``$instruction`` (the task in words), ``$observation`` (current observation
text), ``$admissible`` (a line listing legal actions, or empty when the env lists none), ``$step`` (1-based
env step about to be taken), ``$max_steps``, ``$legend`` (the env's symbol legend from its reset info,
e.g. Sokoban's; empty when it has none). Planner: ``$max_subgoals``. Executor: ``$blueprint``
(numbered subgoals), ``$subgoal_number`` (1-based), ``$num_subgoals``, ``$subgoal``, ``$history``,
``$history_count``, ``$moves`` (the same steps' actions only, for envs whose observation is the whole state,
like Sokoban's board). Flat: ``$history``, ``$history_count``, ``$moves``. The ``executor_fixed`` role is the
executor of the no-``<sub_done>`` ablation (fixed-step subgoal switching): its template does not mention the
tag. ``TEMPLATE_VERSION`` is the default version (v2: ``<sub_done>`` goes right after ``</action>``).
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ROLES = ("planner", "executor", "executor_fixed", "flat")
TEMPLATE_VERSION = "v2"
MAX_ADMISSIBLE_SHOWN = 100  # ALFWorld lists up to ~64 commands (measured); WebShop pages list clickables


@functools.lru_cache(maxsize=64)
def load_template(env: str, role: str, version: str = TEMPLATE_VERSION, template_dir: str | None = None) -> string.Template:
    """The template for (env, role, version); ``template_dir`` overrides the packaged folder."""
    if role not in ROLES:
        raise ValueError(f"template role must be one of {ROLES}, got {role!r}")
    name = f"{role}.{version}.txt"
    if template_dir is not None:
        path = Path(template_dir) / env / name
        if not path.is_file():
            raise FileNotFoundError(f"no prompt template {path} (himac.agent.template_dir={template_dir!r})")
        return string.Template(path.read_text(encoding="utf-8"))
    resource = resources.files("himac_verl.agent").joinpath("templates", env, name)
    if not resource.is_file():
        raise FileNotFoundError(f"no packaged prompt template templates/{env}/{name} for env={env!r}, "
                                f"role={role!r}, himac.agent.template_version={version!r}")
    return string.Template(resource.read_text(encoding="utf-8"))


def executor_template(env: str, use_sub_done: bool, version: str = TEMPLATE_VERSION,
                      template_dir: str | None = None) -> string.Template:
    """The executor's template: ``executor``, or ``executor_fixed`` for the no-``<sub_done>`` ablation (falls
    back to ``executor`` where a template set has no fixed-step variant, e.g. v1 and test templates)."""
    if not use_sub_done:
        try:
            return load_template(env, "executor_fixed", version, template_dir)
        except FileNotFoundError:
            pass
    return load_template(env, "executor", version, template_dir)


@dataclass(frozen=True)
class HistoryEntry:
    """One past env step as the model sees it: the observation acted on, and the action taken."""

    observation: str
    action: str


def format_admissible(actions: list[str] | None) -> str:
    if not actions:
        return ""
    shown = actions[:MAX_ADMISSIBLE_SHOWN]
    more = f" (and {len(actions) - len(shown)} more)" if len(actions) > len(shown) else ""
    return "Admissible actions: " + ", ".join(f"'{a}'" for a in shown) + more


def format_moves(entries: list[HistoryEntry]) -> str:
    """The actions of past steps on one line (``left, up``), or ``(none yet)``."""
    return ", ".join(entry.action for entry in entries) if entries else "(none yet)"


def format_history(entries: list[HistoryEntry], first_step: int) -> str:
    """Numbered past steps; ``first_step`` is the env-step number of ``entries[0]`` (1-based)."""
    if not entries:
        return "(none yet)"
    lines = []
    for i, entry in enumerate(entries, start=first_step):
        lines.append(f"[Step {i}] Observation: {entry.observation.strip()}\n[Step {i}] Action: {entry.action}")
    return "\n".join(lines)


def render(template: string.Template, **values) -> str:
    """Fill a template; a placeholder the template uses but no caller gives is a clear error."""
    try:
        return template.substitute(**{k: str(v) for k, v in values.items()})
    except KeyError as err:
        raise KeyError(f"prompt template uses ${err.args[0]} which the loop does not provide "
                       f"(given: {sorted(values)})") from None
