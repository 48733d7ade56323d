from pathlib import Path

import pytest

from niche.errors import ConfigurationError
from niche.settings import SETTINGS, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_without_environment():
    settings = Settings(environ={})
    assert settings.home == Path(".niche")
    assert settings.cache_dir == Path(".niche/cache")
    assert settings.get("NICHE_DATABASE_URL") == "sqlite:///.niche/niche.db"
    assert settings.get("NICHE_CPU_HOUR_USD") == 0.045
    assert settings.datasets_dir is None
    assert settings.source("NICHE_HOME") == "default"


def test_environment_values_are_parsed_to_their_type_and_derived_defaults_follow():
    settings = Settings(environ={"NICHE_HOME": "/srv/n", "NICHE_CPU_WATTS_PER_CORE": "7.5"})
    assert settings.get("NICHE_CPU_WATTS_PER_CORE") == 7.5
    assert settings.cache_dir == Path("/srv/n/cache")
    assert settings.source("NICHE_HOME") == "env"


def test_overrides_win_over_the_environment():
    settings = Settings(environ={"NICHE_SEED": "3"}, seed=9)
    assert settings.get("NICHE_SEED") == 9
    assert settings.source("NICHE_SEED") == "override"


def test_a_badly_typed_value_names_the_setting():
    with pytest.raises(ConfigurationError, match="NICHE_SEED='x' is not a valid int"):
        Settings(environ={"NICHE_SEED": "x"}).get("NICHE_SEED")


def test_unknown_settings_are_refused():
    with pytest.raises(ConfigurationError, match="unknown setting"):
        Settings(environ={}, colour="red")
    with pytest.raises(ConfigurationError, match="unknown setting"):
        Settings(environ={}).get("NICHE_NOPE")


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert missing == []


def test_every_setting_has_help_and_a_niche_prefix():
    for setting in SETTINGS:
        assert setting.name.startswith("NICHE_")
        assert len(setting.help) > 10


def test_the_gateway_draws_a_random_teacher_sample_by_default():
    from niche.gateway.config import GatewayConfig

    # 5 % of each task's requests get the general model's label too (tests/conftest.py turns
    # it off for the other tests, where a random shadow call would make counts random).
    assert Settings(environ={}).get("NICHE_GATEWAY_SHADOW_FRACTION") == 0.05
    assert GatewayConfig.from_settings(Settings(environ={})).shadow_fraction == 0.05
