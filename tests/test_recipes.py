"""Tuned recipes as defaults of `populax train`, --no-recipe, --algo-opt, and --algo errors."""

from pathlib import Path

import pytest
import yaml

import populax
from populax.cli import main, parse_train_args
from populax.errors import ConfigError
from populax.run.config import FIELDS
from populax.run.recipes import RECIPE_DIR, packaged_recipes, recipe_path, resolve_config_path


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
    """ALGO-ENV.yaml (the automatic defaults), ALGO-STRATEGY-ENV.yaml (a population-method recipe) or
    ALGO-atari.yaml (every Atari id)."""
    for path in Path(RECIPE_DIR).glob("*-*.yaml"):
        settings = yaml.safe_load(path.read_text())
        if "algo" not in settings:
            continue
        if "env" not in settings:  # a family recipe: ALGO-atari.yaml serves every ALE/* id
            assert path.stem == f"{settings['algo']}-atari", path
            continue
        env = settings["env"].replace("/", "_").replace(":", "_")  # brax:halfcheetah -> brax_halfcheetah
        names = {f"{settings['algo']}-{env}", f"{settings['algo']}-{settings.get('strategy')}-{env}"}
        assert path.stem in names, path


def test_recipes_are_package_data_and_the_checkout_link_still_works():
    assert RECIPE_DIR == Path(populax.__file__).resolve().parent / "configs"
    assert "demo" in packaged_recipes() and "sac-Pendulum-v1" in packaged_recipes()
    link = Path(__file__).resolve().parents[1] / "configs"  # `--config configs/demo.yaml` from a checkout
    assert link.is_symlink() and link.resolve() == RECIPE_DIR


@pytest.mark.parametrize("text", ["td3-pbt-HalfCheetah-v5", "td3-pbt-HalfCheetah-v5.yaml", "configs/td3-pbt-HalfCheetah-v5.yaml"])
def test_config_names_a_packaged_recipe_when_no_such_path_exists(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside a checkout: no configs/ here
    assert resolve_config_path(text) == RECIPE_DIR / "td3-pbt-HalfCheetah-v5.yaml"


def test_an_existing_config_path_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo.yaml").write_text("pop: 3\n")
    assert resolve_config_path("demo.yaml") == Path("demo.yaml")
    assert parse_train_args(["--config", "demo.yaml", "--no-recipe"]).pop == 3
    assert parse_train_args(["--config", "demo", "--no-recipe"]).pop == yaml.safe_load((RECIPE_DIR / "demo.yaml").read_text())["pop"]


@pytest.mark.parametrize("text", ["no-such-recipe", "elsewhere/demo.yaml"])
def test_unknown_config_is_one_line_listing_the_packaged_recipes(text, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        resolve_config_path(text)
    message = str(error.value)
    assert message.startswith("--config:") and "\n" not in message and "td3-pbt-HalfCheetah-v5" in message
    assert main(["train", "--config", text, "--out", str(tmp_path / "run")]) == 2
    assert "--config: no such file" in capsys.readouterr().err
