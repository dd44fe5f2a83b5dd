"""Server configuration: defaults, TOML file, environment and flags, in that order of precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from saferoom.config import ServerConfig, WorkerLimits
from saferoom.errors import InvalidRequest


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "saferoom.toml"
    config_file.write_text(
        'listen = "127.0.0.1:7000"\nmax_concurrent_jobs = 4\nmax_queued_jobs = 7\n[engine_limits]\nmemory_mib = 1234\n'
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
        ("max_concurrent_jobs = 0\n", "out of range (1 to 256)"),
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


@pytest.mark.parametrize(
    ("word", "value"),
    [(w, True) for w in ("true", "TRUE", "True", "1", "yes", "YES", "on", "On")]
    + [(w, False) for w in ("false", "FALSE", "0", "no", "No", "off", "OFF")],
)
def test_every_boolean_word(word: str, value: bool) -> None:
    config = ServerConfig.load(env={"SAFEROOM_SECCOMP": word, "SAFEROOM_LANDLOCK": word})
    assert config.seccomp is value and config.landlock is value


@pytest.mark.parametrize("word", ["", " ", "ture", "enabled", "2", "-1", "yes please", "none", "0n"])
def test_a_boolean_that_is_not_a_word_is_refused_not_read_as_false(word: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        ServerConfig.load(env={"SAFEROOM_SECCOMP": word})
    message = str(info.value)
    assert "seccomp" in message and "accepted: true" in message and "off" in message


@pytest.mark.parametrize(
    ("key", "raw", "fragment"),
    [
        ("SAFEROOM_MAX_CONCURRENT_JOBS", "", "not a whole number"),
        ("SAFEROOM_MAX_CONCURRENT_JOBS", "2.5", "not a whole number"),
        ("SAFEROOM_MAX_CONCURRENT_JOBS", "0x10", "not a whole number"),
        ("SAFEROOM_MAX_CONCURRENT_JOBS", "0", "out of range"),
        ("SAFEROOM_MAX_CONCURRENT_JOBS", "100000", "out of range"),
        ("SAFEROOM_MAX_QUEUED_JOBS", "-5", "out of range"),
        ("SAFEROOM_MAX_MESSAGE_MIB", "4096", "out of range"),
        ("SAFEROOM_RELEASE_QUANTUM_MS", "-1", "out of range"),
        ("SAFEROOM_AUDIT_CHECKPOINT_EVERY", "0", "out of range"),
        ("SAFEROOM_MAX_APPROVAL_DAYS", "1e3", "not a whole number"),
        ("SAFEROOM_GRACE_SECONDS", "nan", "not a number"),
        ("SAFEROOM_GRACE_SECONDS", "inf", "not a number"),
        ("SAFEROOM_GRACE_SECONDS", "five", "not a number"),
        ("SAFEROOM_GRACE_SECONDS", "", "not a number"),
        ("SAFEROOM_GRACE_SECONDS", "-1", "out of range"),
        ("SAFEROOM_HANDSHAKE_TIMEOUT_SECONDS", "0", "out of range"),
        ("SAFEROOM_HANDSHAKE_TIMEOUT_SECONDS", "600", "out of range"),
        ("SAFEROOM_HANDSHAKE_TIMEOUT_SECONDS", "soon", "not a number"),
        ("SAFEROOM_IDLE_TIMEOUT_SECONDS", "0", "out of range"),
        ("SAFEROOM_MAX_STREAMS", "2", "out of range"),
        ("SAFEROOM_MAX_CODE_PHASES", "0", "out of range"),
        ("SAFEROOM_MAX_STREAMS_PER_IDENTITY", "0", "out of range"),
        ("SAFEROOM_MAX_STREAMS_PER_IDENTITY", "11", "less than a third of max_streams"),
    ],
)
def test_numbers_that_are_junk_or_out_of_range_are_refused(key: str, raw: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        ServerConfig.load(env={key: raw})
    assert fragment in str(info.value)
    assert key.removeprefix("SAFEROOM_").lower() in str(info.value)


def test_stream_slots_and_connection_timeouts_are_read() -> None:
    config = ServerConfig.load(
        env={
            "SAFEROOM_MAX_STREAMS": "40",
            "SAFEROOM_MAX_STREAMS_PER_IDENTITY": "13",
            "SAFEROOM_HANDSHAKE_TIMEOUT_SECONDS": "2.5",
            "SAFEROOM_IDLE_TIMEOUT_SECONDS": "90",
        }
    )
    assert (config.max_streams, config.max_streams_per_identity) == (40, 13)
    assert (config.handshake_timeout_seconds, config.idle_timeout_seconds) == (2.5, 90.0)
    defaults = ServerConfig()
    assert 3 * defaults.max_streams_per_identity < defaults.max_streams
    assert defaults.handshake_timeout_seconds <= 10
    assert defaults.sandbox_limits.cpu_seconds < defaults.engine_limits.cpu_seconds
    assert defaults.sandbox_limits.wall_seconds < defaults.engine_limits.wall_seconds


def test_numbers_in_range_are_read() -> None:
    config = ServerConfig.load(env={"SAFEROOM_GRACE_SECONDS": "2.5", "SAFEROOM_MAX_QUEUED_JOBS": " 7 "})
    assert config.grace_seconds == 2.5 and config.max_queued_jobs == 7


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("seccomp = 1\n", "not a boolean"),
        ('seccomp = "maybe"\n', "not a boolean"),
        ("max_concurrent_jobs = true\n", "not a whole number"),
        ("max_concurrent_jobs = 1.5\n", "not a whole number"),
        ("listen = 5\n", "expected a string"),
        ("data_dir = 5\n", "expected a path"),
        ("[engine_limits]\nmemory_mib = 1\n", "engine_limits.memory_mib"),
        ("[engine_limits]\nwall_seconds = 0\n", "out of range"),
        ('[sandbox_limits]\ncpu_seconds = "lots"\n', "sandbox_limits.cpu_seconds"),
        # the code phase's limits are tight whatever the engine's are
        ("[sandbox_limits]\ncpu_seconds = 3600\n", "sandbox_limits.cpu_seconds: 3600 is out of range (1 to 600)"),
        ("[sandbox_limits]\nwall_seconds = 900\n", "sandbox_limits.wall_seconds: 900.0 is out of range"),
        ("seccom = false\n", "unknown configuration options: seccom"),
        ("[server]\nlisten = 'x'\n", "unknown configuration options: server"),
    ],
)
def test_bad_toml_values_and_unknown_keys_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)
    with pytest.raises(InvalidRequest) as info:
        ServerConfig.load(config_file, env={})
    assert fragment in str(info.value)


def test_toml_booleans_and_numbers_are_read(tmp_path: Path) -> None:
    config_file = tmp_path / "ok.toml"
    config_file.write_text('seccomp = false\nlandlock = "on"\ngrace_seconds = 3\n[sandbox_limits]\nwall_seconds = 9\n')
    config = ServerConfig.load(config_file, env={})
    assert config.seccomp is False and config.landlock is True
    assert config.grace_seconds == 3.0 and config.sandbox_limits.wall_seconds == 9.0


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SAFEROOM_SECCOMP": "enabled"}, "seccomp"),
        ({"SAFEROOM_MAX_QUEUED_JOBS": "0"}, "max_queued_jobs"),
    ],
)
def test_serve_with_a_bad_value_stops_with_the_message(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    from click.testing import CliRunner

    from saferoom.cli.main import cli

    args = ["serve", "--data", str(tmp_path / "d"), "--state", str(tmp_path / "s"), "--pki", str(tmp_path / "p")]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1
    assert fragment in result.output and "error (invalid_request)" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "s").exists()  # refused before anything was created
