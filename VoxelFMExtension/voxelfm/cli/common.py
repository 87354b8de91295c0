"""Arguments and helpers shared by several commands (model choice, feature extraction options)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import EllipsisType, ModuleType
from typing import Any, TypeVar

from ..features.spec import FeatureOptions, ModelSpec
from ..features.tiling import default_max_tokens
from . import options

log = logging.getLogger("voxelfm")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="registry id (see `voxelfm models`), checkpoint file or folder; default: official VoxelFM when "
        "cached or reachable, else the bundled offline model voxelfm-tiny",
    )
    p.add_argument(
        "--model-config", default=None, help="config.yaml for an official .pth not stored beside it"
    )
    p.add_argument(
        "--device",
        type=options.device,
        default="auto",
        help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps",
    )
    p.add_argument(
        "--precision",
        choices=options.PRECISIONS,
        default="auto",
        help="backbone arithmetic: auto (bf16 where the hardware runs it fast, else fp32), fp32 or bf16",
    )


def add_series_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--series",
        default=None,
        metavar="UID",
        help="the series to read when a DICOM folder holds several (the error lists their UIDs)",
    )


def add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-tokens",
        type=options.int_at_least(64),
        default=default_max_tokens(),
        help="tile budget in patch tokens (default: what this machine's memory allows, 4096-32768; "
        f"here {default_max_tokens()})",
    )
    p.add_argument(
        "--overlap", type=options.non_negative_int, default=2, help="tile overlap in patches (default 2)"
    )
    p.add_argument("--crop-background", action="store_true", help="crop to the body before resampling")
    p.add_argument(
        "--max-patches",
        type=options.positive_int,
        default=None,
        help="shrink the volume to at most N patches",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read/write the feature cache")


def add_threads_arg(p: argparse.ArgumentParser, help: str) -> None:
    """--threads N: torch CPU threads (the handler calls ``torch.set_num_threads``; none: torch's choice)."""
    p.add_argument("--threads", type=options.positive_int, default=None, help=help)


def add_model_and_feature_args(p: argparse.ArgumentParser) -> None:
    """--model ... --precision, then --max-tokens ... --no-cache: what every command that extracts features takes."""
    add_model_args(p)
    add_feature_args(p)


def spec_from_args(args: argparse.Namespace):
    """The ModelSpec a command's --model/--device/--precision/--max-tokens describe."""

    return ModelSpec(
        model=args.model or "",
        device=getattr(args, "device", "auto"),
        precision=getattr(args, "precision", "auto"),
        max_tokens=getattr(args, "max_tokens", 8192),
        config=getattr(args, "model_config", None),
    )


def feature_options_from_args(args: argparse.Namespace):
    return FeatureOptions(
        crop_background=bool(args.crop_background),
        max_patches=args.max_patches,
        overlap=args.overlap,
        cache=not args.no_cache,
    )


ConfigT = TypeVar("ConfigT")


def config_from_args(
    cls: Callable[..., ConfigT], args: argparse.Namespace, same: str = "", **renamed: str
) -> ConfigT:
    """``cls`` (a config dataclass) built from the parsed options: each field in ``same`` from the option of its
    name, each ``field=dest`` in ``renamed`` from the option stored as ``dest``; other fields keep their
    defaults. WHY: one rule from options to a config, instead of a hand-written field-by-field copy each."""
    values: dict[str, Any] = {name: getattr(args, name) for name in same.split()}
    values.update({name: getattr(args, dest) for name, dest in renamed.items()})
    return cls(**values)


def spec_and_options(args: argparse.Namespace) -> tuple[ModelSpec, FeatureOptions]:
    """(ModelSpec, FeatureOptions) of the options `add_model_and_feature_args` added: what a pipeline takes."""
    return spec_from_args(args), feature_options_from_args(args)


@dataclass(frozen=True)
class Command:
    """One sub-command: its name and line in `voxelfm --help`, its own --help text, its options and handler.

    ``raw`` shows the description as written (a module docstring with its own layout); else argparse wraps it.
    ``run`` is None for a command whose sub-actions set their own handlers (``voxelfm index ACTION``).
    """

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int] | None
    description: str | None
    raw: bool
    usage: str | None = None

    def register(self, sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
        formatter = argparse.RawDescriptionHelpFormatter if self.raw else argparse.HelpFormatter
        p = sub.add_parser(
            self.name,
            help=self.help,
            description=self.description,
            usage=self.usage,
            formatter_class=formatter,
        )
        self.arguments(p)
        if self.run is not None:
            p.set_defaults(func=self.run)
        return p


ArgumentsFn = TypeVar("ArgumentsFn", bound=Callable[[argparse.ArgumentParser], None])


def command(
    name: str,
    run: Callable[[argparse.Namespace], int] | None = None,
    *,
    description: str | EllipsisType | None = ...,
    usage: str | None = None,
) -> Callable[[ArgumentsFn], ArgumentsFn]:
    """Declare the decorated function, which adds the options, as sub-command ``name`` handled by ``run``.

    As in click, the docstring is the help: its first paragraph is the command's line in `voxelfm --help`, the
    rest its --help description (wrapped). With no rest, the description is the module's docstring shown as
    written; ``description`` overrides both (None: no description).
    """

    def declare(arguments: ArgumentsFn) -> ArgumentsFn:
        summary, _, rest = inspect.cleandoc(arguments.__doc__ or "").partition("\n\n")
        if not summary:
            raise TypeError(f"{arguments.__qualname__} needs a docstring: the help line of `voxelfm {name}`")
        raw = description is ... and not rest
        if description is not ...:
            text = description
        else:  # a wrapped paragraph, or the module's docstring shown as written
            text = " ".join(rest.split()) if rest else sys.modules[arguments.__module__].__doc__
        help_line = " ".join(summary.split())
        arguments.command = Command(name, help_line, arguments, run, text, raw, usage)  # type: ignore[attr-defined]
        return arguments

    return declare


def commands_of(module: ModuleType) -> list[Command]:
    """The sub-commands a module declares with `command`, in declaration order."""
    found = (getattr(value, "command", None) for value in vars(module).values())
    return [c for c in found if isinstance(c, Command) and c.arguments.__module__ == module.__name__]


def deferred(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``name`` of ``voxelfm.cli.<module>``, imported when its command runs: every command module is
    imported for `voxelfm --help`, so the handlers (which import torch and the pipelines, about 1 s) live in
    the ``*_run`` modules, whose imports are at their top."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(args)

    run.__qualname__ = f"{module}.{name}"
    return run
