"""A bad option value is one line on every command, in our words where the words are ours; a
missing argument and a misspelt option keep their usage (see also test_decode and
test_deadletters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpsflow.cli import COMMANDS, build_parser, main

BAD_VALUES = [
    (
        "run",
        ["app:app", "--cmq", "http://127.0.0.1:1", "--queue", "q", "--wait", "31"],
        "--wait",
    ),
    ("run", ["app:app", "--workers", "-1"], "--workers"),
    ("run", ["app:app", "--log-level", "loud"], "--log-level"),
    ("run", ["app:app", "--wait"], "--wait"),
    ("send", ["http://127.0.0.1:9/cb", "x.json", "--concurrency", "0"], "--concurrency"),
    ("decode", ["--json=yes", "x.json"], "--json"),
    ("deadletters list", ["letters.jsonl", "--last", "x"], "--last"),
    ("deadletters show", ["--help=yes", "letters.jsonl", "id"], "-h/--help"),
    (
        "deadletters replay",
        ["letters.jsonl", "--to", "http://x/", "--expires-in", "1y"],
        "--expires-in",
    ),
    ("reconcile", ["app:app", "--since", "x"], "--since"),
    ("cmq-server", ["--max-messages", "0"], "--max-messages"),
    ("mps-server", ["--port", "x"], "--port"),
    ("mps-server", ["--port", "70000"], "--port"),
    ("mps-server", ["--max-clock-skew", "-5"], "--max-clock-skew"),
    ("cmq-server", ["--port", "-1"], "--port"),
    ("cmq-server", ["--visibility-timeout", "-1"], "--visibility-timeout"),
    ("cmq-server", ["--max-msg-size", "0"], "--max-msg-size"),
]


@pytest.mark.parametrize(
    ("command", "argv", "option"),
    BAD_VALUES,
    ids=[f"{command} {option}" for command, _, option in BAD_VALUES],
)
def test_a_bad_option_value_is_one_line_naming_the_option_and_the_help(
    command: str, argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"mpsflow {command}: error: {option}: ")
    assert err.endswith(f"; see mpsflow {command} --help\n")


def test_every_command_and_action_is_checked() -> None:
    checked = {command.split()[0] for command, _, _ in BAD_VALUES}
    assert checked == set(COMMANDS)
    assert {c for c, _, _ in BAD_VALUES if c.startswith("deadletters ")} == {
        "deadletters list",
        "deadletters show",
        "deadletters replay",
    }


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["run", "app:app", "--cmq", "http://127.0.0.1:1", "--queue", "q", "--wait", "31"],
            "mpsflow run: error: --wait: expected 0 to 30, got 31; see mpsflow run --help",
        ),
        (
            ["run", "app:app", "--workers", "-1"],
            "mpsflow run: error: --workers: expected at least 1, got -1; see mpsflow run --help",
        ),
        (
            ["send", "--cmq", "http://127.0.0.1:9800", "--queue", "q", "--batch", "17", "x"],
            "mpsflow send: error: --batch: expected 1 to 16, got 17; see mpsflow send --help",
        ),
    ],
)
def test_the_line_says_what_is_wrong_in_our_words(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_a_missing_argument_keeps_the_usage_and_names_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) > 1  # the usage, then the line
    assert err[-1].startswith("mpsflow run: error: ")
    assert "MODULE:APP" in err[-1]


@pytest.mark.parametrize(
    ("given", "line"),
    [
        ("sned", "mpsflow: error: unknown command 'sned' (did you mean send?); see mpsflow --help"),
        ("rnu", "mpsflow: error: unknown command 'rnu' (did you mean run?); see mpsflow --help"),
        (
            "xyz",
            "mpsflow: error: unknown command 'xyz'; one of "
            + ", ".join(COMMANDS)
            + "; see mpsflow --help",
        ),
    ],
)
def test_a_misspelt_command_is_one_line_with_a_guess(
    given: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([given, "app:app"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("lst", " (did you mean list?)"),
        ("repaly", " (did you mean replay?)"),
        ("xyz", "; one of list, show, replay"),
    ],
)
def test_a_misspelt_action_is_one_line_with_a_guess_as_a_command_is(
    given: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["deadletters", given, "letters.jsonl"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"mpsflow deadletters: error: unknown action {given!r}{hint};"
        " see mpsflow deadletters --help\n"
    )


def test_an_action_s_error_is_prefixed_with_the_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mpsflow deadletters show: error: …``, as the action's usage errors are."""
    empty = tmp_path / "letters.jsonl"
    empty.touch()
    assert main(["deadletters", "show", str(empty), "zzz"]) == 2
    assert capsys.readouterr().err.startswith("mpsflow deadletters show: error: ")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["send", "http://127.0.0.1:9/cb", "x.json", "--expires-in", "-1m"],
            "mpsflow send: error: --expires-in: a negative value needs the = form:"
            " write --expires-in=-1m; see mpsflow send --help",
        ),
        (
            ["send", "http://127.0.0.1:9/cb", "--expires", "-1.5h", "x.json"],
            "mpsflow send: error: --expires-in: a negative value needs the = form:"
            " write --expires-in=-1.5h; see mpsflow send --help",
        ),
        (
            ["deadletters", "replay", "letters.jsonl", "--to", "http://x/", "--expires-in", "-2h"],
            "mpsflow deadletters replay: error: --expires-in: a negative value needs the = form:"
            " write --expires-in=-2h; see mpsflow deadletters replay --help",
        ),
        (
            ["send", "http://127.0.0.1:9/cb", "x.json", "--timeout", "-5s"],
            "mpsflow send: error: --timeout: expected a number, got '-5s'; see mpsflow send --help",
        ),
        (
            ["run", "app:app", "--log-level", "-1x"],
            "mpsflow run: error: --log-level: expected one of debug, info, warning, error,"
            " got '-1x'; see mpsflow run --help",
        ),
    ],
    ids=["send", "abbreviated", "replay", "not negative", "choices"],
)
def test_a_value_that_starts_with_a_minus_says_to_use_the_equals_form_or_why_not(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse takes ``-1m`` after an option for an option: the line says to write
    ``--expires-in=-1m`` when the option takes a negative value, else why it takes none."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_a_negative_number_still_goes_with_a_space() -> None:
    args = build_parser().parse_args(["send", "http://127.0.0.1:9/cb", "x", "--expires-in", "-60"])
    assert args.expires_in == -60
