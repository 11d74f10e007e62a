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
        (
            "redis+sentinel://:pw@h:1/svc?sentinel_username=watch&sentinel_password=s%26cret",
            SentinelService([("h", 1)], "svc", password="pw", sentinel_username="watch", sentinel_password="s&cret"),
        ),
        ("rediss+sentinel://h:1/svc", SentinelService([("h", 1)], "svc", tls={})),
        (
            "rediss+sentinel://h:1/svc?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
            "&ssl_cert_reqs=optional&db=2",
            SentinelService(
                [("h", 1)],
                "svc",
                db=2,
                tls={
                    "ssl_ca_certs": "/ca.pem",
                    "ssl_certfile": "/c.pem",
                    "ssl_keyfile": "/k.pem",
                    "ssl_cert_reqs": "optional",
                },
            ),
        ),
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
        ("redis+sentinel://h:1/svc?sentinel_pasword=x", "unknown option 'sentinel_pasword'"),
        ("redis+sentinel://h:1/svc?ssl_ca_certs=/ca.pem", "option 'ssl_ca_certs' needs TLS: use rediss+sentinel://"),
        ("rediss+sentinel://h:1/svc?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of none, optional, required"),
        ("rediss+sentinel://h:1/svc?ssl=true", "unknown option 'ssl'"),
    ],
)
def test_a_malformed_sentinel_url_is_one_config_error_naming_the_field(tmp_path, url, says):
    path = tmp_path / "gatewayd.toml"
    path.write_text('[providers.p]\nkind = "openai"\nbase_url = "http://127.0.0.1:1"\n')
    settings = config.load(path, environ={"GATEWAYD_CONTROL_REDIS_URL": url})
    with pytest.raises(config.ConfigError) as raised:
        open_store(settings)
    message = str(raised.value)
    assert message.startswith(f"control.redis_url: {url.partition(':')[0]} URL") and says in message
    assert "\n" not in message


def test_the_sentinel_url_is_shown_without_its_password():
    store = RedisStore("redis+sentinel://user:hunter2@127.0.0.1:1,127.0.0.1:2/svc?db=1")
    try:
        assert store.where == "redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc"
    finally:
        store.close()


def test_the_sentinel_password_and_tls_files_are_not_shown_either():
    url = "rediss+sentinel://:pw@127.0.0.1:1/svc?sentinel_password=hunter2&ssl_keyfile=/k.pem"
    store = RedisStore(url)
    try:
        assert store.where == "rediss+sentinel://127.0.0.1:1/svc"
    finally:
        store.close()
