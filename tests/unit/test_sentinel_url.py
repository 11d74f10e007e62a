"""`redis+sentinel://` URLs in `[control] redis_url`: what they name, and one-line config
errors naming the field for malformed ones."""

from __future__ import annotations

import pytest

from gatewayd import config
from gatewayd.control.redis_store import RedisStore
from gatewayd.control.redis_target import SentinelService, parse_sentinel_url
from gatewayd.control.stores import open_store


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://10.0.0.1:26379/mymaster", SentinelService([("10.0.0.1", 26379)], "mymaster")),
        (
            "redis+sentinel://a:1,b:2,c/svc?db=3",
            SentinelService([("a", 1), ("b", 2), ("c", 26379)], "svc", db=3),
        ),
        (
            "redis+sentinel://:p%40ss@[::1]:5000/svc",
            SentinelService([("::1", 5000)], "svc", password="p@ss"),
        ),
        ("redis+sentinel://u:pw@h:1/svc", SentinelService([("h", 1)], "svc", username="u", password="pw")),
    ],
)
def test_a_sentinel_url_names_sentinels_service_db_and_credentials(url, expected):
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1", "service name"),
        ("redis+sentinel://h:1/a/b", "service name"),
        ("redis+sentinel:///svc", "sentinel addresses"),
        ("redis+sentinel://h:1,,h:2/svc", "sentinel addresses"),
        ("redis+sentinel://:1/svc", "has no host"),
        ("redis+sentinel://h:x/svc", "no valid port"),
        ("redis+sentinel://h:70000/svc", "no valid port"),
        ("redis+sentinel://h:1/svc?db=x", "db must be a number"),
        ("redis+sentinel://h:1/svc?timeout=1", "unknown option 'timeout'"),
    ],
)
def test_a_malformed_sentinel_url_is_one_config_error_naming_the_field(tmp_path, url, says):
    path = tmp_path / "gatewayd.toml"
    path.write_text('[providers.p]\nkind = "openai"\nbase_url = "http://127.0.0.1:1"\n')
    settings = config.load(path, environ={"GATEWAYD_CONTROL_REDIS_URL": url})
    with pytest.raises(config.ConfigError) as raised:
        open_store(settings)
    message = str(raised.value)
    assert message.startswith("control.redis_url: redis+sentinel URL") and says in message
    assert "\n" not in message


def test_the_sentinel_url_is_shown_without_its_password():
    store = RedisStore("redis+sentinel://user:hunter2@127.0.0.1:1,127.0.0.1:2/svc?db=1")
    try:
        assert store.where == "redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc"
    finally:
        store.close()
