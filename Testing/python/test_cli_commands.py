"""The sub-command declarations (`cli.common.command`): help from docstrings, handlers, --help order."""

from __future__ import annotations

import argparse
import importlib
import sys
import types

import pytest

from voxelfm.cli.common import Command, command, commands_of
from voxelfm.cli.main import COMMAND_MODULES, build_parser

MODULE_DOC = """`voxelfm thing`: the module's text.

  Indented lines stay as written.
"""


def _module_with(*declared: tuple[str, str, object]) -> types.ModuleType:
    """A throw-away module whose functions are declared as commands (name, docstring, description)."""
    module = types.ModuleType("voxelfm_test_commands", MODULE_DOC)
    sys.modules[module.__name__] = module
    try:
        for name, doc, description in declared:

            def arguments(p: argparse.ArgumentParser) -> None:
                p.add_argument("--flag", action="store_true")

            arguments.__doc__ = doc
            arguments.__module__ = module.__name__
            kwargs = {} if description is ... else {"description": description}
            setattr(module, f"{name}_arguments", command(name, lambda args: 7, **kwargs)(arguments))
    finally:
        del sys.modules[module.__name__]
    return module


def test_docstring_gives_help_and_description():
    module = _module_with(
        ("plain", "one line for the\n    command list", ...),
        ("wrapped", "short help\n\n    A longer text\n    over two lines.", ...),
        ("bare", "no description here", None),
    )
    plain, wrapped, bare = commands_of(module)
    assert (plain.name, plain.help) == ("plain", "one line for the command list")
    assert plain.description == MODULE_DOC and plain.raw  # the module's layout is kept
    assert wrapped.description == "A longer text over two lines." and not wrapped.raw
    assert bare.description is None


def test_registered_command_parses_and_dispatches():
    (declared,) = commands_of(_module_with(("go", "run it", ...)))
    parser = argparse.ArgumentParser(prog="voxelfm")
    declared.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["go", "--flag"])
    assert args.flag and args.func(args) == 7
    assert (
        "  Indented lines stay as written."
        in parser._subparsers._group_actions[0].choices["go"].format_help()
    )


def test_a_command_without_docstring_is_refused():
    with pytest.raises(TypeError, match="needs a docstring"):
        command("nameless")(lambda p: None)


def test_every_command_module_declares_its_commands_in_help_order():
    names = []
    for module_name in COMMAND_MODULES:
        declared = commands_of(importlib.import_module(module_name))
        assert declared, f"{module_name} declares no command"
        assert all(isinstance(c, Command) and c.help for c in declared)
        names += [c.name for c in declared]
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == names
    assert len(set(names)) == len(names)
    handlers = {n: subparsers.choices[n].get_default("func") for n in names}
    assert [n for n, f in handlers.items() if f is None] == ["index"]  # its actions carry the handlers


def test_a_missing_command_module_is_an_error_not_a_shorter_command_list(monkeypatch):
    """A packaging mistake (a command module left out of a build) must fail loudly: a parser that silently
    lacks `voxelfm query` would tell the user the command does not exist."""
    import voxelfm.cli.main as cli_main

    monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*COMMAND_MODULES, "voxelfm.cli.not_packaged_cmd"))
    with pytest.raises(ModuleNotFoundError, match="not_packaged_cmd"):
        cli_main.build_parser()
