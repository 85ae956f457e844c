"""Tuned recipes as defaults of `populax train`, --no-recipe, --algo-opt, and --algo errors."""

from pathlib import Path

import yaml

from populax.cli import main, parse_train_args
from populax.run.config import FIELDS
from populax.run.recipes import RECIPE_DIR, recipe_path


def test_recipe_is_used_as_defaults_and_flags_still_win(capsys):
    config = parse_train_args(["--algo", "sac", "--env", "Pendulum-v1", "--hidden", "32,32", "--hp.gamma", "0.95"])
    assert "sac-Pendulum-v1.yaml" in capsys.readouterr().err
    assert config.hidden == (32, 32)  # flag beats recipe
    assert config.hp["lr-actor"] == 1e-3 and config.hp["gamma"] == "0.95"  # recipe hp merged under flags


def test_no_recipe_opts_out(capsys):
    config = parse_train_args(["--algo", "sac", "--env", "Pendulum-v1", "--no-recipe"])
    assert "recipe" not in capsys.readouterr().err
    assert config.hp == {} and config.hidden == (256, 256)


def test_no_recipe_for_unknown_pair():
    assert recipe_path("td3", "CartPole-v1") is None
    assert parse_train_args(["--algo", "td3"]).hp == {}


def test_every_recipe_uses_known_settings():
    recipes = sorted(Path(RECIPE_DIR).glob("*-*.yaml"))
    assert {p.stem.split("-", 1)[0] for p in recipes} >= {"sac", "dqn", "ppo"}
    for path in recipes:
        settings = yaml.safe_load(path.read_text())
        assert set(k.replace("-", "_") for k in settings) <= set(FIELDS), path


def test_algo_option_mistakes_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--algo", "ppo", "--env", "CartPole-v1", "--algo-opt.epochs", "many", "--out", str(out)]) == 2
    assert "--algo-opt.epochs: cannot read 'many' as int" in capsys.readouterr().err
    assert main(["train", "--algo", "dqn", "--env", "Pendulum-v1", "--out", str(out)]) == 2
    assert "dqn needs a discrete action space" in capsys.readouterr().err
    assert not out.exists()


def test_recipe_names_its_own_algorithm_and_environment():
    """ALGO-ENV.yaml (the automatic defaults) or ALGO-STRATEGY-ENV.yaml (a population-method recipe)."""
    for path in Path(RECIPE_DIR).glob("*-*.yaml"):
        settings = yaml.safe_load(path.read_text())
        if "algo" not in settings:
            continue
        names = {f"{settings['algo']}-{settings['env']}", f"{settings['algo']}-{settings.get('strategy')}-{settings['env']}"}
        assert path.stem in names, path
