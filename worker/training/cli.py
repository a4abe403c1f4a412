"""The trainers' command lines, `python -m worker.training.<trainer> --data FILE --base FOLDER
--out FOLDER`: the flags every trainer shares, a flag per setting of its config, the input files
it reads (a fault in one ends the command with a line that names it, not a traceback), and a
progress bar of its steps. Of processes training together (`worker.training.distributed`), only
the main one shows the bar and its logs, saves the model and prints the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    NoReturn,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

from tqdm import tqdm
from transformers.utils import logging as transformers_logging

from app.pairs import Pair, pair_of
from worker.training import distributed
from worker.training.data import Demonstration, Messages

if TYPE_CHECKING:
    from app.round_config import OnlineConfig
    from worker.training.policy import Policy

Config = TypeVar("Config")
Row = TypeVar("Row")

PROMPTS = 'prompts: JSON Lines of {"messages": [{"role": ..., "content": ...}, ...]}'
PAIRS = "pairs: a snapshot's JSON Lines (`alignloop export --format pairs`)"
STEP_LINE = "step "
"""What starts a step's line on stdout (`--step-lines`), for a parent that follows the run."""
PHASE_LINE = "phase "
"""What starts the line of a point of a phase before the steps (DPO's reference pass)."""


# --- arguments -----------------------------------------------------------------------------------


def trainer_parser(
    module: str,
    description: str,
    *,
    data: str,
    base: str = "the policy to start from: a model folder",
    reward_model: bool = False,
) -> argparse.ArgumentParser:
    """A parser of the inputs of `python -m module`: `--data` (a file; `data` says what it
    holds), `--base` (a model folder), `--reward-model` (a folder, for the optimisers that
    sample) and `--out`."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--data", type=existing_file, required=True, help=data)
    parser.add_argument("--base", type=existing_folder, required=True, help=base)
    if reward_model:
        parser.add_argument(
            "--reward-model",
            type=existing_folder,
            required=True,
            help="a reward model folder (`python -m worker.training.reward_model`)",
        )
    parser.add_argument("--out", type=new_folder, required=True, help="the folder to create")
    parser.add_argument(
        "--step-lines",
        action="store_true",
        help=f"print each step's values on stdout as one line, {STEP_LINE!r} and JSON",
    )
    return parser


def parse_settings(
    parser: argparse.ArgumentParser, kind: type[Config], argv: Sequence[str] | None
) -> tuple[argparse.Namespace, Config]:
    """Parse `argv` with a flag per setting of `kind` added to `parser` (`--learning-rate 1e-4`,
    `--lora` / `--no-lora`, `--kl-target none`); the arguments and the settings. Logs go to
    stderr from here on (`_log_to_stderr`)."""
    hints = get_type_hints(kind)
    for field in fields(kind):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        default = {"default": field.default, "help": "default: %(default)s"}
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **default)
        elif get_origin(hint) is Literal:
            parser.add_argument(flag, choices=get_args(hint), **default)
        else:
            parser.add_argument(flag, type=_from_text(hint), **default)
    args = parser.parse_args(argv)
    _log_to_stderr()
    return args, kind(**{field.name: getattr(args, field.name) for field in fields(kind)})


def _log_to_stderr() -> None:
    """Logs on stderr; of the processes training together, only the main one's information
    and bars (transformers' loading bars included), everyone's warnings and errors."""
    main = distributed.is_main()
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING, format="%(asctime)s %(message)s"
    )
    if not main:
        transformers_logging.disable_progress_bar()


def _from_text(hint: Any) -> Callable[[str], Any]:
    """A flag's value from its text: the setting's type, or `none` for an optional one."""
    if not isinstance(hint, UnionType):
        return hint
    (kind,) = (option for option in get_args(hint) if option is not type(None))

    def optional(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    optional.__name__ = kind.__name__  # argparse names it in "invalid float value: 'x'"
    return optional


def existing_file(text: str) -> Path:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return Path(text)


def existing_folder(text: str) -> Path:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return Path(text)


def new_folder(text: str) -> Path:
    """A folder to create: refused before training, not after, when something is there."""
    path = Path(text)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise argparse.ArgumentTypeError(f"already exists: {text}")
    return path


def fail(message: str) -> NoReturn:
    """End the command with `message` on stderr and exit status 1."""
    sys.exit(f"error: {message}")


# --- input files ---------------------------------------------------------------------------------


def read_json_lines(path: Path, row: Callable[[Any], Row], what: str) -> list[Row]:
    """`row(record)` of each JSON line of `path` (blank lines skipped). A file that cannot be
    read, a line that is not JSON or whose record `row` refuses (TypeError, ValueError or
    KeyError), or a file without any line, ends the command, naming the file and the line."""
    rows = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    rows.append(_row(row, line, f"{path}, line {number}", what))
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {path}: {error}")
    if not rows:
        fail(f"{path} holds no {what}")
    return rows


def _row(row: Callable[[Any], Row], line: str, where: str, what: str) -> Row:
    try:
        return row(json.loads(line.rstrip()))
    except json.JSONDecodeError as error:
        fail(f"{where}: not JSON ({error.msg}, column {error.colno})")
    except (TypeError, ValueError, KeyError) as error:
        fail(f"{where}: not a {what} ({error})")


def read_pairs(path: Path) -> list[Pair]:
    """A snapshot's pairs (the rows `app.pairs.read_pairs` reads)."""
    return read_json_lines(path, pair_of, "pair")


def read_demonstrations(path: Path) -> list[Demonstration]:
    """`{"messages": [...], "answer": "..."}` rows."""
    return read_json_lines(path, lambda record: Demonstration(**record), "demonstration")


def read_prompts(path: Path) -> list[Messages]:
    """`{"messages": [...]}` rows (the JSON Lines `alignloop prompts import` reads, without
    its shorthand)."""
    return read_json_lines(path, _prompt, "prompt")


def _prompt(record: Any) -> Messages:
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages or not all(map(_is_message, messages)):
        raise ValueError('"messages" must be a list of {"role": ..., "content": ...}')
    return messages


def _is_message(message: Any) -> bool:
    return isinstance(message, dict) and {"role", "content"} <= message.keys()


# --- running -------------------------------------------------------------------------------------


@contextmanager
def step_bar(
    total: int, what: str, *, metric: str = "loss", lines: bool = False
) -> Iterator[Callable[[dict], None]]:
    """Yields an `on_step` for a trainer: steps done of `total`, the step's `metric` and the
    time left, on stderr and only on a terminal, by the main process; with `lines`, each
    step's values on stdout too (`STEP_LINE` and JSON), flushed at once."""
    main = distributed.is_main()
    with tqdm(total=total, desc=what, unit=" steps", disable=None if main else True) as bar:

        def on_step(point: dict[str, Any]) -> None:
            bar.update(point["step"] - bar.n)
            bar.set_postfix_str(f"{metric} {point[metric]:.4f}")
            if lines and main:
                print(STEP_LINE + json.dumps(point), flush=True)

        yield on_step


def phase_lines(what: str, *, lines: bool) -> Callable[[int, int], None] | None:
    """With `lines`, an `on_progress(done, total)` that prints each point of the phase `what`
    on stdout (`PHASE_LINE` and JSON) from the main process; else None."""
    if not (lines and distributed.is_main()):
        return None

    def on_progress(done: int, total: int) -> None:
        print(PHASE_LINE + json.dumps({"what": what, "done": done, "total": total}), flush=True)

    return on_progress


def online_main(
    module: str,
    argv: Sequence[str] | None,
    kind: type[OnlineConfig],
    train: Callable[..., tuple[Policy, list[dict[str, float]]]],
    what: str,
) -> int:
    """The command line of an optimiser that samples (PPO, RLOO): `train(prompts, base,
    reward_model, config, on_step=...)` on the prompts of `--data`, with a bar of its steps."""
    parser = trainer_parser(
        module,
        f"Optimise a policy with {what} against a reward model.",
        data=PROMPTS,
        reward_model=True,
    )
    args, config = parse_settings(parser, kind, argv)
    if config.prompts_per_step < distributed.world_size():
        fail(
            f"--prompts-per-step {config.prompts_per_step} is fewer than the "
            f"{distributed.world_size()} processes training: each needs a prompt a step"
        )
    prompts = read_prompts(args.data)
    with step_bar(config.steps, what, metric="reward", lines=args.step_lines) as on_step:
        policy, curve = train(prompts, args.base, args.reward_model, config, on_step=on_step)
    return save_and_report(policy, curve, args.out)


def save_and_report(policy: Policy, curve: list[dict[str, float]], out: Path) -> int:
    """Save the trained policy to `out` (as a round's policy stage does) and print its steps,
    last point and curve, from the main process only; the exit status."""
    if distributed.is_main():
        policy.save(out)
        report = {"path": str(out), "steps": len(curve), "last": curve[-1], "curve": curve}
        print(json.dumps(report, indent=2))
    return 0
