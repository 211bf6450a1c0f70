"""`config`: the config that will run, resolved (`--config` with its `base` files and every
`--set`), secrets masked; with `--fields`, every field a user may set, with its allowed values,
default and meaning (config/fields.py)."""

from __future__ import annotations

from orchestrator.commands import add_config, add_overrides, load


def add_arguments(parser) -> None:
    add_config(parser, None)
    add_overrides(parser)
    parser.add_argument(
        "--fields",
        action="store_true",
        help="list every config field (key, allowed values, default, meaning) instead",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="with --fields: as the docs' Markdown tables (docs/config-reference.md)",
    )


def run(args) -> None:
    if args.fields:
        from orchestrator.config.fields import format_reference, markdown_reference, reference

        write = markdown_reference if args.markdown else format_reference
        print(write(reference()), end="")
        return
    from orchestrator.common.yaml_config import to_yaml

    print(to_yaml(load(args)), end="")
