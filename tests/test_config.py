"""Server configuration: defaults, TOML file, environment and flags, in that order of precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from saferoom.config import ServerConfig, WorkerLimits
from saferoom.errors import InvalidRequest


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "saferoom.toml"
    config_file.write_text(
        'listen = "127.0.0.1:7000"\nmax_concurrent_jobs = 4\nmax_queued_jobs = 7\n'
        "[engine_limits]\nmemory_mib = 1234\n"
    )
    env = {"SAFEROOM_MAX_CONCURRENT_JOBS": "5", "SAFEROOM_DATA_DIR": "/srv/data", "UNRELATED": "x"}
    config = ServerConfig.load(config_file, env=env, max_queued_jobs=9, state_dir=None)
    assert config.listen == "127.0.0.1:7000"
    assert config.max_concurrent_jobs == 5
    assert config.max_queued_jobs == 9
    assert config.data_dir == Path("/srv/data")
    assert config.state_dir == Path("state")  # a None flag means "not given"
    assert config.engine_limits.memory_mib == 1234
    assert config.engine_limits.cpu_seconds == ServerConfig().engine_limits.cpu_seconds


def test_defaults_keep_a_small_machine_serving() -> None:
    config = ServerConfig.load(env={})
    assert config.listen.startswith("127.0.0.1:")
    assert config.sandbox_limits.memory_mib < config.engine_limits.memory_mib <= 8192
    assert isinstance(config.sandbox_limits, WorkerLimits)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("no_such_option = 1\n", "unknown configuration options"),
        ("max_concurrent_jobs = 0\n", "at least 1"),
        ('max_concurrent_jobs = "many"\n', "max_concurrent_jobs"),
        ("sandbox_limits = 3\n", "sandbox_limits"),
        ("[sandbox_limits]\nbogus = 1\n", "sandbox_limits"),
        ("listen = \n", "cannot read config file"),
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, text: str, fragment: str) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)
    with pytest.raises(InvalidRequest) as info:
        ServerConfig.load(config_file, env={})
    assert fragment in str(info.value)
