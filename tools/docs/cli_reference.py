"""The CLI reference page, generated from the Typer app itself (bertkit.cli.entry.app): every command and
group, its usage line, help text, arguments and options with their types and defaults. Nothing is copied by
hand, so a new option appears on the site with the next build."""

from __future__ import annotations

from typing import Any

HEADER = """# Command line

Generated from the Typer app (`bertkit.cli.entry.app`) when the site is built: every command, its arguments
and options. `bertkit COMMAND --help` prints the same. User errors print one line and exit 2; see
[Errors](python.md#errors).
"""


def cli_markdown() -> str:
    import typer

    from bertkit.cli.entry import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="bertkit")
    parts = [HEADER, overview(root, ctx)]
    for name, command, sub_ctx in walk(root, ctx):
        parts.append(command_markdown(name, command, sub_ctx))
    return "\n".join(parts)


def walk(group: Any, ctx: Any, prefix: str = "bertkit"):
    """(full name, command, its context) for every command under `group`, groups before their commands."""
    for name in group.list_commands(ctx):
        command = group.commands[name]
        sub_ctx = command.context_class(command, info_name=name, parent=ctx)
        yield f"{prefix} {name}", command, sub_ctx
        if getattr(command, "commands", None):
            yield from walk(command, sub_ctx, f"{prefix} {name}")


def overview(root: Any, ctx: Any) -> str:
    rows = ["| command | what it does |", "|---|---|"]
    for name, command, _ in walk(root, ctx):
        rows.append(f"| [`{name}`](#{anchor(name)}) | {first_line(command)} |")
    return "\n".join(rows) + "\n"


def command_markdown(name: str, command: Any, ctx: Any) -> str:
    level = "##" if name.count(" ") == 1 else "###"
    usage = " ".join([name, *command.collect_usage_pieces(ctx)])
    lines = [f"{level} `{name}` {{#{anchor(name)}}}", "", "```text", usage, "```", ""]
    lines += [clean(command.help or ""), ""]
    if getattr(command, "commands", None):
        lines += ["Commands: " + ", ".join(f"[`{name} {n}`](#{anchor(f'{name} {n}')})"
                                           for n in command.list_commands(ctx)), ""]
        return "\n".join(lines)
    rows = [p.get_help_record(ctx) for p in command.get_params(ctx) if p.name != "help"]
    if rows:  # typer's own help record: names with the value's type, then help with default / required
        lines += ["| argument / option | description |", "|---|---|"]
        lines += [f"| `{cell(names)}` | {cell(clean(text or ''))} |" for names, text in filter(None, rows)]
    return "\n".join(lines) + "\n"


def first_line(command: Any) -> str:
    return cell(clean((command.short_help or command.help or "").strip().split("\n\n")[0]))


def clean(text: str) -> str:
    return " ".join(text.replace("\b", "").split()) if "\n\n" not in text else "\n\n".join(
        " ".join(p.replace("\b", "").split()) for p in text.split("\n\n"))


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def anchor(name: str) -> str:
    return name.replace(" ", "-")
