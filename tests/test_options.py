"""The command line generated from the option dataclasses (reenact.options): each option declared once."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from reenact.cli import main
from reenact.options import AT_LEAST_1, OutputOptions, add_options, cli_fields, flag_of, from_args, option


@dataclasses.dataclass
class Sample:
    steps: int = option(100, "how many steps", type=AT_LEAST_1)
    rate: float | None = option(None, "a rate (default: the model's)")
    progress: bool = option(True, "no progress bar")
    verbose: bool = option(False, "say more")
    mode: Literal["fast", "slow"] = option("fast", "speed")
    kind: str = option("pa", "interpolation", choices=("pa", "tps"))
    strength: float = option(1.0, "strength", flag="--motion")
    shots: tuple[int, ...] = option((1, 8), "comma list of K")
    hidden: int = option(3, "not on the command line", cli=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_options(p, Sample)
    return p


def test_defaults_round_trip():
    assert from_args(Sample, _parser().parse_args([])) == Sample()


def test_values_round_trip():
    ns = _parser().parse_args("--steps 7 --rate 0.5 --no-progress --verbose --mode slow --kind tps --motion 0.25 "
                              "--shots 2,4".split())
    assert from_args(Sample, ns) == Sample(steps=7, rate=0.5, progress=False, verbose=True, mode="slow", kind="tps",
                                           strength=0.25, shots=(2, 4))
    assert not hasattr(ns, "hidden") and from_args(Sample, ns, hidden=5).hidden == 5


def test_flags_and_help():
    assert [flag_of(f) for f in cli_fields(Sample)] == ["--steps", "--rate", "--no-progress", "--verbose", "--mode",
                                                        "--kind", "--motion", "--shots"]
    text = _parser().format_help()
    assert "how many steps (default 100)" in text and "comma list of K (default 1,8)" in text
    assert "{fast,slow}" in text and "{pa,tps}" in text and "--hidden" not in text
    assert "(default: the model's)" in text and "None" not in text


@pytest.mark.parametrize("argv, message", [
    ("--steps 0", "argument --steps: must be at least 1, got 0"),
    ("--steps x", "argument --steps: expected an integer, got 'x'"),
    ("--mode medium", "argument --mode: invalid choice: 'medium'"),
    ("--kind xyz", "argument --kind: invalid choice: 'xyz'"),
    ("--shots 1,x", "argument --shots: expected a comma list of integers, got '1,x'"),
])
def test_a_wrong_value_is_argparse_s_error(argv, message):
    with pytest.raises(argparse.ArgumentError, match=message.split(": ", 1)[1].replace("(", r"\(")):
        _parser().parse_args(argv.split())


def test_only_and_exclude_must_name_fields():
    with pytest.raises(ValueError, match="no field"):
        cli_fields(Sample, only=("stepz",))
    assert [f.name for f in cli_fields(Sample, only=("steps", "mode"))] == ["steps", "mode"]
    assert "steps" not in [f.name for f in cli_fields(Sample, exclude=("steps",))]


def _subcommand_options():
    from finetune.personalize import FinetuneOptions
    from puppeteer.audio.motion import MotionOptions
    from puppeteer.retarget import RetargetOptions
    from reenact.app.handlers import AppConfig
    from reenact.data.prepare import PrepareOptions
    from reenact.metrics.evaluate import EvalOptions

    drive = [(RetargetOptions, None, ()), (OutputOptions, None, ())]
    steps = (FinetuneOptions, ("steps", "seed"), ())
    return {"prepare": [(PrepareOptions, None, ())], "finetune": [(FinetuneOptions, None, ())],
            "render": [(OutputOptions, None, ())], "eval": [(EvalOptions, None, ())], "animate": [*drive, steps],
            "puppeteer": drive, "live": drive,
            "speak": [(MotionOptions, None, ("seed",)), (OutputOptions, None, ()), steps],
            "lipsync": [(OutputOptions, None, ()), steps], "app": [(AppConfig, None, ())]}


@pytest.mark.parametrize("command", list(_subcommand_options()))
def test_help_lists_every_field_of_the_command_s_dataclasses(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    for cls, only, exclude in _subcommand_options()[command]:
        for f in cli_fields(cls, only, exclude):
            assert f"  {flag_of(f)}" in text, (cls.__name__, f.name)
            assert f.metadata["help"].split()[0] in text


def test_cli_defaults_are_the_dataclass_defaults():
    from finetune.personalize import FinetuneOptions
    from puppeteer.retarget import RetargetOptions
    from reenact.cli import build_parser
    from reenact.metrics.evaluate import EvalOptions

    p = build_parser()
    ns = p.parse_args(["finetune", "a.jpg", "-o", "a.safetensors"])
    assert from_args(FinetuneOptions, ns) == FinetuneOptions() and ns.steps == FinetuneOptions().steps
    ns = p.parse_args(["eval", "--data", "d", "--out", "o", "--sync-expert", "none", "--method", "static"])
    assert from_args(EvalOptions, ns) == EvalOptions(sync_checkpoint=None, methods=("static",))
    ns = p.parse_args(["puppeteer", "a.safetensors", "--driver", "v.mp4", "-o", "o.mp4", "--parts", "mouth,eyes"])
    assert from_args(RetargetOptions, ns) == RetargetOptions(parts=("mouth", "eyes"))
    assert from_args(OutputOptions, ns) == OutputOptions()
    ns = p.parse_args(["prepare", "src", "out", "--no-audio"])
    assert ns.keep_audio is False and ns.crf == 20


def test_a_wrong_value_on_the_command_line_is_one_line(capsys):
    assert main(["puppeteer", "a.safetensors", "--driver", "v.mp4", "-o", "o.mp4", "--mode", "sideways"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reenact puppeteer: error: argument --mode: invalid choice: 'sideways'")
    assert err.count("\n") == 1
