"""Settings: parsing of flags and environment variables, and their precedence."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from aqueue import cli
from aqueue.settings import (
    MAX_PAYLOAD_LIMIT,
    MAX_SECONDS,
    OPTIONS,
    Settings,
    SettingsError,
    comma_list,
    duration,
    integer,
    load_settings,
    options_for,
    parse_allowed_hosts,
    parse_cors_origins,
    parse_port,
    parse_queues,
    parse_roles,
    positive_float,
    rate_limit,
    retention,
    seconds,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No aqueue variable of the machine running the tests leaks into them."""
    for option in OPTIONS:
        for name in option.variables:
            monkeypatch.delenv(name, raising=False)


def settings_for(*argv: str) -> Settings:
    return cli.settings_from(cli.build_parser().parse_args(list(argv)))


# --- parse_queues -----------------------------------------------------------------------


def test_parse_queues_gives_each_queue_the_default_concurrency():
    assert parse_queues("default,email", 10) == {"default": 10, "email": 10}


def test_parse_queues_reads_a_per_queue_concurrency():
    assert parse_queues("default,email:5", 10) == {"default": 10, "email": 5}


def test_parse_queues_ignores_blanks_around_names():
    assert parse_queues(" default , ,video:2 ", 3) == {"default": 3, "video": 2}


@pytest.mark.parametrize(
    ("text", "named"),
    [("", "at least one"), (",", "at least one"), ("email:0", "email"), ("email:x", "email")],
)
def test_parse_queues_rejects_bad_input_naming_it(text, named):
    with pytest.raises(SettingsError, match=named):
        parse_queues(text, 10)


def test_parse_queues_rejects_an_invalid_queue_name():
    with pytest.raises(SettingsError, match="queue"):
        parse_queues("default,bad name", 10)


def test_parse_queues_rejects_a_name_ending_in_a_newline():
    # "$" in a pattern matches before a final "\n": this once served a queue "email\n"
    with pytest.raises(SettingsError, match=r"'email\\n'"):
        parse_queues("email\n:5", 10)


# --- parse_roles ------------------------------------------------------------------------


def test_parse_roles_keeps_the_order_given():
    assert parse_roles("worker,api") == ("worker", "api")


def test_parse_roles_drops_duplicates():
    assert parse_roles("api, api,worker,api") == ("api", "worker")


def test_parse_roles_rejects_an_unknown_role_naming_it():
    with pytest.raises(SettingsError, match="'bogus'"):
        parse_roles("api,bogus")


def test_parse_roles_rejects_an_empty_list():
    with pytest.raises(SettingsError, match="at least one"):
        parse_roles(" , ")


# --- parse_port -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "8000", "65535"])
def test_parse_port_accepts_ports_in_range(text):
    assert parse_port(text) == int(text)


@pytest.mark.parametrize("text", ["0", "-1", "65536", "http", "80.5", ""])
def test_parse_port_rejects_out_of_range_or_non_numbers(text):
    with pytest.raises(SettingsError, match="must be"):
        parse_port(text)


@pytest.mark.parametrize("text", ["0", "65536", "http"])
def test_port_flag_out_of_range_is_refused_naming_it(text):
    with pytest.raises(SettingsError, match=f"^--port must be .*{text}"):
        settings_for("serve", "--port", text)


# --- event loop -------------------------------------------------------------------------


def test_the_event_loop_is_chosen_automatically_unless_named(monkeypatch):
    assert settings_for("serve").event_loop == "auto"
    assert settings_for("serve", "--loop", "AsyncIO").event_loop == "asyncio"
    monkeypatch.setenv("AQUEUE_LOOP", "uvloop")
    assert settings_for("migrate").event_loop == "uvloop"


def test_an_unknown_event_loop_is_refused_naming_the_choices():
    with pytest.raises(
        SettingsError, match=r"^--loop must be one of auto, uvloop, asyncio, got 'tokio'"
    ):
        settings_for("serve", "--loop", "tokio")


def test_asking_for_uvloop_where_it_is_not_installed_is_refused(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(SettingsError, match="not installed"):
        settings_for("serve", "--loop", "uvloop")


# --- allowed hosts ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_bound_to_loopback_the_api_answers_only_local_names(host):
    allowed = Settings(host=host).api_allowed_hosts
    assert {"localhost", "127.0.0.1", "[::1]"} <= set(allowed)
    assert "*" not in allowed


def test_bound_to_another_loopback_address_that_address_is_answered_too():
    assert "127.0.0.2" in Settings(host="127.0.0.2").api_allowed_hosts


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "queue.internal"])
def test_bound_elsewhere_the_api_answers_any_host(host):
    assert Settings(host=host).api_allowed_hosts == ("*",)


def test_allowed_hosts_setting_wins_over_the_bound_address():
    assert Settings(host="0.0.0.0", allowed_hosts=("a.example",)).api_allowed_hosts == (
        "a.example",
    )


def test_parse_allowed_hosts_reads_names_wildcards_and_addresses():
    assert parse_allowed_hosts(" API.example.com,*.internal, 10.0.0.5,[::1],my_api ") == (
        "api.example.com",
        "*.internal",
        "10.0.0.5",
        "[::1]",
        "my_api",
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "at least one"),
        (" , ", "at least one"),
        ("api.example.com:8000", "'api.example.com:8000'"),
        ("http://api.example.com", "'http://api.example.com'"),
        ("*example.com", "'*example.com'"),
        ("api.*.com", "'api.*.com'"),
        ("::1", "'::1'"),
        ("[::g]", "'[::g]'"),
        ("a b", "'a b'"),
    ],
)
def test_parse_allowed_hosts_rejects_what_is_not_a_host_naming_it(text, named):
    with pytest.raises(SettingsError, match=re.escape(named)):
        parse_allowed_hosts(text)


def test_allowed_hosts_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_ALLOWED_HOSTS", "api.example.com")
    assert settings_for("serve").allowed_hosts == ("api.example.com",)


def test_allowed_hosts_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_ALLOWED_HOSTS", "api.example.com")
    assert settings_for("serve", "--allowed-hosts", "*").allowed_hosts == ("*",)


# --- max payload bytes ------------------------------------------------------------------


def test_max_payload_bytes_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_MAX_PAYLOAD_BYTES", "2048")
    assert settings_for("serve").max_payload_bytes == 2048


def test_max_payload_bytes_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_MAX_PAYLOAD_BYTES", "2048")
    assert settings_for("serve", "--max-payload-bytes", "4096").max_payload_bytes == 4096


def test_enqueue_reads_max_payload_bytes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_MAX_PAYLOAD_BYTES", "2048")
    assert settings_for("enqueue", "demo.echo").max_payload_bytes == 2048


@pytest.mark.parametrize(
    ("text", "named"),
    [("0", "at least 1"), ("lots", "whole number"), (str(MAX_PAYLOAD_LIMIT + 1), "at most")],
)
def test_max_payload_bytes_out_of_range_is_refused_naming_it(text, named):
    with pytest.raises(SettingsError, match=f"--max-payload-bytes.*{named}"):
        settings_for("serve", "--max-payload-bytes", text)


# --- max body bytes ---------------------------------------------------------------------


def test_max_body_bytes_is_1_mib_unless_given(monkeypatch):
    assert settings_for("serve").max_body_bytes == 1_048_576
    monkeypatch.setenv("AQUEUE_MAX_BODY_BYTES", "4096")
    assert settings_for("serve").max_body_bytes == 4096
    assert settings_for("serve", "--max-body-bytes", "8192").max_body_bytes == 8192


@pytest.mark.parametrize(("text", "named"), [("0", "at least 1"), ("1MB", "whole number")])
def test_max_body_bytes_out_of_range_is_refused_naming_it(text, named):
    with pytest.raises(SettingsError, match=f"^--max-body-bytes must be .*{named}"):
        settings_for("serve", "--max-body-bytes", text)


def test_a_payload_limit_larger_than_the_body_limit_is_refused(monkeypatch):
    with pytest.raises(SettingsError, match=r"--max-payload-bytes \(2000000\) must not be larger"):
        settings_for("serve", "--max-payload-bytes", "2000000")
    monkeypatch.setenv("AQUEUE_MAX_BODY_BYTES", "1000")
    with pytest.raises(SettingsError, match=r"than --max-body-bytes \(1000\)"):
        settings_for("serve", "--max-payload-bytes", "1001")
    settings = settings_for("serve", "--max-payload-bytes", "1000")
    assert (settings.max_payload_bytes, settings.max_body_bytes) == (1000, 1000)


def test_both_limits_raised_together_are_taken():
    settings = settings_for(
        "serve", "--max-payload-bytes", "5000000", "--max-body-bytes", "6000000"
    )
    assert (settings.max_payload_bytes, settings.max_body_bytes) == (5_000_000, 6_000_000)


def test_enqueue_sends_no_body_so_its_payload_limit_is_not_held_to_one():
    assert settings_for("enqueue", "demo.echo", "--max-payload-bytes", "5000000").max_payload_bytes


# --- TLS -------------------------------------------------------------------------------


def test_tls_is_off_unless_a_certificate_and_its_key_are_given(monkeypatch):
    assert not settings_for("serve").tls
    monkeypatch.setenv("AQUEUE_SSL_CERTFILE", "/tls/cert.pem")
    monkeypatch.setenv("AQUEUE_SSL_KEYFILE", "/tls/key.pem")
    settings = settings_for("serve")
    assert settings.tls
    assert (settings.ssl_certfile, settings.ssl_keyfile) == (
        Path("/tls/cert.pem"),
        Path("/tls/key.pem"),
    )


@pytest.mark.parametrize(
    ("given", "missing"), [("--ssl-certfile", "--ssl-keyfile"), ("--ssl-keyfile", "--ssl-certfile")]
)
def test_a_certificate_or_key_alone_is_refused(given, missing):
    with pytest.raises(SettingsError, match=f"^{given} needs {missing} too"):
        settings_for("serve", given, "/tls/file.pem")


# --- CORS origins -----------------------------------------------------------------------


def test_cors_is_off_unless_origins_are_given(monkeypatch):
    assert settings_for("serve").cors_origins == ()
    monkeypatch.setenv("AQUEUE_CORS_ORIGINS", "https://app.example.com")
    assert settings_for("serve").cors_origins == ("https://app.example.com",)


@pytest.mark.parametrize(
    ("text", "origins"),
    [
        ("https://app.example.com", ("https://app.example.com",)),
        # as a browser sends it: lower case, no default port
        ("HTTPS://App.Example.COM:443", ("https://app.example.com",)),
        (
            "http://127.0.0.1:80, http://localhost:3000",
            ("http://127.0.0.1", "http://localhost:3000"),
        ),
        ("http://[::1]:8080,http://[::1]:8080", ("http://[::1]:8080",)),
    ],
)
def test_cors_origins_are_read_as_browsers_send_them(text, origins):
    assert parse_cors_origins(text) == origins


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("*", "does not take \\*: the API answers with job payloads"),
        ("https://*.example.com", "wildcards are not taken"),
        ("https://app.example.com/", "not an origin"),
        ("https://app.example.com/app", "not an origin"),
        ("app.example.com", "not an origin"),
        ("ftp://app.example.com", "not an origin"),
        ("https://user:pw@app.example.com", "not an origin"),
        ("https://app.example.com?x=1", "not an origin"),
        ("https://app.example.com:99999", "not an origin"),
        ("https://[not:ipv6]", "not an origin"),
        (" , ", "at least one origin"),
    ],
)
def test_what_is_not_an_exact_origin_is_refused_naming_it(text, named):
    with pytest.raises(SettingsError, match=f"^--cors-origins .*{named}"):
        settings_for("serve", "--cors-origins", text)


# --- values from files ------------------------------------------------------------------

SECRET_URL = "postgresql://aqueue:s3cr3t-pw@db.internal:5432/aqueue"


def test_the_database_url_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "database-url"
    secret.write_text(f"  {SECRET_URL}\n\n")  # as `echo` or a mounted Secret leaves it
    monkeypatch.setenv("AQUEUE_DATABASE_URL_FILE", str(secret))
    for command in ("serve", "migrate", "enqueue", "queues"):
        positional = ["demo.echo"] if command == "enqueue" else []
        assert settings_for(command, *positional).database_url == SECRET_URL


def test_the_api_token_can_come_from_a_file_and_turns_auth_on(monkeypatch, tmp_path):
    secret = tmp_path / "api-token"
    secret.write_text("a-shared-token-from-a-file\n")
    monkeypatch.setenv("AQUEUE_API_TOKEN_FILE", str(secret))
    settings = settings_for("serve")
    assert settings.api_token == "a-shared-token-from-a-file" and settings.auth_enabled
    secret.write_text("short")
    with pytest.raises(SettingsError, match=r"^--api-token .*at least 16 characters"):
        settings_for("serve")
    assert "a-shared-token" not in repr(settings)


def test_the_flag_and_the_plain_variable_win_over_the_file(monkeypatch, tmp_path):
    secret = tmp_path / "database-url"
    secret.write_text(SECRET_URL)
    monkeypatch.setenv("AQUEUE_DATABASE_URL_FILE", str(secret))
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/db")
    assert settings_for("serve").database_url == "postgresql://from-env/db"
    flagged = settings_for("serve", "--database-url", "postgresql://from-flag/db")
    assert flagged.database_url == "postgresql://from-flag/db"
    # an empty variable counts as unset, as everywhere
    monkeypatch.setenv("DATABASE_URL", "")
    assert settings_for("serve").database_url == SECRET_URL


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda path: None, "cannot be read: No such file or directory"),
        (lambda path: path.mkdir(), "cannot be read: Is a directory"),
        (lambda path: path.write_text(" \n\t\n"), "is empty"),
        (lambda path: path.write_bytes(b"\xff\xfe" + SECRET_URL.encode()), "is not UTF-8 text"),
        (lambda path: path.write_text(SECRET_URL * 2000), "is larger than 65536 bytes"),
    ],
)
def test_a_file_that_cannot_be_used_is_refused_naming_the_variable_and_path(
    monkeypatch, tmp_path, make, said
):
    path = tmp_path / "database-url"
    make(path)
    monkeypatch.setenv("AQUEUE_DATABASE_URL_FILE", str(path))
    with pytest.raises(SettingsError) as refused:
        settings_for("serve")
    message = str(refused.value)
    assert message == f"--database-url: the file AQUEUE_DATABASE_URL_FILE names ({path}) {said}"
    assert "s3cr3t" not in message


def test_a_value_from_a_file_that_its_parser_refuses_is_not_shown(monkeypatch, tmp_path):
    # the mechanism is the table's: any option may name a file variable
    from aqueue import settings as module

    rows = [
        replace(o, file_env="AQUEUE_PORT_FILE") if o.name == "port" else o for o in module.OPTIONS
    ]
    monkeypatch.setattr(module, "OPTIONS", tuple(rows))
    path = tmp_path / "port"
    path.write_text("hunter2-port\n")
    with pytest.raises(SettingsError) as refused:
        load_settings({}, {"AQUEUE_PORT_FILE": str(path)})
    message = str(refused.value)
    assert message.startswith("--port (from the file AQUEUE_PORT_FILE names) must be a whole")
    assert "hunter2" not in message
    path.write_text("9000\n")
    assert load_settings({}, {"AQUEUE_PORT_FILE": str(path)}).port == 9000


def test_help_names_the_file_variable(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--help"])
    assert "or a file named by AQUEUE_DATABASE_URL_FILE" in " ".join(
        capsys.readouterr().out.split()
    )


# --- precedence: flags over environment over defaults -----------------------------------


def test_serve_without_flags_or_env_uses_the_defaults():
    assert settings_for("serve") == Settings()


def test_database_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    assert settings_for("serve").database_url == "postgresql://env/db"


def test_database_url_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    settings = settings_for("serve", "--database-url", "postgresql://flag/db")
    assert settings.database_url == "postgresql://flag/db"


def test_migrate_reads_the_database_url_too(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    assert settings_for("migrate").database_url == "postgresql://env/db"


def test_concurrency_from_the_environment_applies_to_every_queue(monkeypatch):
    monkeypatch.setenv("AQUEUE_CONCURRENCY", "3")
    settings = settings_for("serve", "--queues", "default,email:7")
    assert settings.concurrency == 3
    assert settings.queues == {"default": 3, "email": 7}


def test_concurrency_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_CONCURRENCY", "3")
    assert settings_for("serve", "--concurrency", "4").queues == {"default": 4}


def test_queue_variable_of_the_seed_is_read(monkeypatch):
    monkeypatch.setenv("QUEUE", "email")
    assert settings_for("serve").queues == {"email": 10}


def test_aqueue_queues_wins_over_the_seed_queue_variable(monkeypatch):
    monkeypatch.setenv("QUEUE", "email")
    monkeypatch.setenv("AQUEUE_QUEUES", "video:2")
    assert settings_for("serve").queues == {"video": 2}


def test_queues_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_QUEUES", "video")
    assert settings_for("serve", "--queues", "email").queues == {"email": 10}


def test_port_and_roles_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("AQUEUE_PORT", "9001")
    monkeypatch.setenv("AQUEUE_ROLES", "worker")
    settings = settings_for("serve")
    assert (settings.port, settings.roles) == (9001, ("worker",))


def test_lease_seconds_flag_is_parsed_as_a_number():
    assert settings_for("serve", "--lease-seconds", "2.5").lease_seconds == 2.5


def test_backoff_cap_below_base_is_refused():
    with pytest.raises(SettingsError, match="--backoff-cap"):
        settings_for("serve", "--backoff-base", "10", "--backoff-cap", "1")


def test_bad_environment_value_is_refused(monkeypatch):
    monkeypatch.setenv("AQUEUE_PORT", "99999")
    with pytest.raises(SettingsError, match="--port"):
        settings_for("serve")


# --- main -------------------------------------------------------------------------------


def test_main_with_a_bad_flag_value_exits_2_with_one_line_on_stderr(capsys):
    assert cli.main(["serve", "--concurrency", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("aqueue: error: ")
    assert "--concurrency" in err and "'x'" in err


def test_main_with_a_newline_in_a_queue_name_exits_2_with_one_line(capsys):
    # were the name taken, serve would fail on the database URL instead: exit 1, not 2
    unreachable = "postgresql://postgres@127.0.0.1:1/nowhere"
    args = ["serve", "--roles", "worker", "--database-url", unreachable]
    assert cli.main([*args, "--queues", "default,email\n:5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--queues" in err and "'email\\n'" in err


def test_main_with_an_unknown_role_exits_2_naming_it(capsys):
    assert cli.main(["serve", "--roles", "api,bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bogus" in err


def test_bad_environment_value_names_the_variable_it_came_from(monkeypatch):
    monkeypatch.setenv("QUEUE", "bad name")
    with pytest.raises(SettingsError, match=r"^--queues \(env QUEUE\) has an invalid queue"):
        settings_for("serve")


def test_an_empty_environment_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("AQUEUE_PORT", "")
    assert settings_for("serve").port == 8000


def test_pool_size_bounds_the_pool_minimum_too():
    settings = settings_for("serve", "--pool-size", "1")
    assert (settings.pool_min_size, settings.pool_size) == (1, 1)


def test_log_level_is_read_in_any_case():
    assert settings_for("serve", "--log-level", "debug").log_level == "DEBUG"


def test_bad_log_level_is_refused_naming_it():
    with pytest.raises(SettingsError, match=r"^--log-level 'loud' is not a logging level"):
        settings_for("serve", "--log-level", "loud")


def test_a_command_reads_only_its_own_options(monkeypatch):
    # a bad serve-only variable must not stop `aqueue status`
    monkeypatch.setenv("AQUEUE_PORT", "nope")
    monkeypatch.setenv("AQUEUE_MIGRATION_LOCK_TIMEOUT", "nope")
    assert settings_for("status", "00000000-0000-0000-0000-000000000000") == Settings()


def test_load_settings_takes_flags_by_option_name():
    settings = load_settings({"port": "9000"}, {"AQUEUE_PORT": "9001", "AQUEUE_HOST": "::"})
    assert (settings.port, settings.host) == (9000, "::")


# --- the table of options ---------------------------------------------------------------


def test_every_option_has_its_own_flag_and_variables():
    flags = [o.flag for o in OPTIONS]
    envs = [name for o in OPTIONS for name in o.variables]
    assert len(set(flags)) == len(flags)
    assert len(set(envs)) == len(envs)


def test_every_option_default_is_the_settings_default():
    for option in OPTIONS:
        assert getattr(Settings(), option.name) == option.default


@pytest.mark.parametrize(
    ("command", "positional"),
    [("serve", []), ("migrate", []), ("enqueue", ["demo.echo"]), ("status", ["some-id"])],
)
def test_every_option_of_a_command_is_a_flag_of_it(command, positional):
    for option in options_for(command):
        args = cli.build_parser().parse_args([command, *positional, option.flag, "text"])
        assert getattr(args, option.name) == "text"


def test_serve_help_shows_each_flag_with_its_variable_and_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in options_for("serve"):
        assert option.flag in text
        assert f"[default {option.shown_default}; env {option.env}" in text


def test_database_flags_are_on_every_command():
    for command in ("serve", "migrate", "enqueue", "status"):
        assert {"database_url", "data_dir"} <= {o.name for o in options_for(command)}


# --- parsers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("2.5", 2.5), ("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800),
     ("1w", 604800), ("1h30m", 5400), (" 7D ", 604800)],
)  # fmt: skip
def test_duration_reads_seconds_and_units(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7 d", "7x", "-1d", "0", "0s", "1d2", "inf"])
def test_duration_refuses_what_is_not_a_positive_duration(text):
    with pytest.raises(SettingsError, match="must be"):
        duration(text)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "x", ""])
def test_positive_float_refuses_zero_negatives_and_non_finite(text):
    with pytest.raises(SettingsError, match="must be"):
        positive_float(text)


@pytest.mark.parametrize("text", ["1e300", "315360001", "522w", "3651d"])
def test_spans_longer_than_ten_years_are_refused(text):
    # make_interval wraps a huge number into a negative interval: a lease expired at once
    with pytest.raises(SettingsError, match="at most 315360000 seconds"):
        duration(text)
    if text[-1].isdigit():
        with pytest.raises(SettingsError, match="at most 315360000 seconds"):
            seconds(text)


def test_ten_years_is_the_longest_span_taken():
    assert seconds("315360000") == duration("3650d") == MAX_SECONDS


@pytest.mark.parametrize("flag", ["--lease-seconds", "--backoff-cap", "--retention"])
def test_options_of_seconds_refuse_more_than_ten_years(flag):
    with pytest.raises(SettingsError, match=f"{flag} must be at most 315360000 seconds"):
        settings_for("serve", flag, "1e300")


def test_integer_bounds_are_named_in_the_message():
    with pytest.raises(SettingsError, match="at most 8, got 9"):
        integer(1, 8)("9")
    assert integer(0)("0") == 0


def test_comma_list_parses_each_item_and_drops_blanks_and_repeats():
    assert comma_list(integer(1))(" 3, ,1,3 ") == (3, 1)
    with pytest.raises(SettingsError, match="needs at least one value"):
        comma_list(integer(1))(" , ")


# --- retention --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 7 * 86400.0),
        ("12h", 12 * 3600.0),
        ("30m", 1800.0),
        ("90s", 90.0),
        ("3600", 3600.0),
        ("1.5d", 1.5 * 86400.0),
        (" 2H ", 7200.0),
        ("0", None),
        ("0d", None),
        ("off", None),
        ("OFF", None),
    ],
)
def test_retention_reads_durations_and_off(text, seconds):
    assert retention(text) == seconds


@pytest.mark.parametrize("text", ["", "7y", "-1d", "d", "7 days", "1e3x"])
def test_retention_rejects_what_is_not_a_duration_naming_it(text):
    with pytest.raises(SettingsError, match="must be"):
        retention(text)


def test_retention_defaults_to_seven_days():
    assert settings_for("serve").retention_seconds == 7 * 86400.0


def test_retention_comes_from_the_environment_and_the_flag_wins(monkeypatch):
    monkeypatch.setenv("AQUEUE_RETENTION", "off")
    assert settings_for("serve").retention_seconds is None
    assert settings_for("serve", "--retention", "12h").retention_seconds == 12 * 3600.0


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("5/s", 5, 1.0), ("100/min", 100, 60.0), ("1000/h", 1000, 3600.0), (" 7 / minute ", 7, 60.0)],
)
def test_rate_limit_reads_a_count_per_period(text, count, period):
    parsed = rate_limit(text)
    assert (parsed.count, parsed.period) == (count, period)


@pytest.mark.parametrize("text", ["", "5", "0/s", "5/day", "-1/s", "five/s"])
def test_rate_limit_refuses_what_is_not_a_rate(text):
    with pytest.raises(SettingsError, match="must be a rate"):
        rate_limit(text)


def test_rate_limit_is_off_unless_asked_for():
    assert settings_for("serve").rate_limit is None
    assert str(settings_for("serve", "--rate-limit", "5/s").rate_limit) == "5/s"


def test_metrics_port_comes_from_its_flag_or_variable_and_is_off_by_default(monkeypatch):
    assert settings_for("serve").metrics_port is None
    monkeypatch.setenv("AQUEUE_METRICS_PORT", "9100")
    assert settings_for("serve").metrics_port == 9100
    assert settings_for("serve", "--metrics-port", "9200").metrics_port == 9200
    with pytest.raises(SettingsError, match=r"^--metrics-port must be"):
        settings_for("serve", "--metrics-port", "0")


def test_metrics_port_may_not_be_the_api_port_when_the_api_runs():
    with pytest.raises(SettingsError, match="--metrics-port must differ from --port"):
        settings_for("serve", "--port", "9000", "--metrics-port", "9000")
    worker = settings_for("serve", "--roles", "worker", "--port", "9000", "--metrics-port", "9000")
    assert worker.metrics_port == 9000  # no api: --port is not listened on
