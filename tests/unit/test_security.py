"""Security basics checked from the source and with fakes: no pickle-like loading anywhere, every
Kafka client built from the settings (so SASL/SSL reach it, faust included), URL image fetches
refuse internal targets behind DNS names and redirects, and secrets never reach logs or output.
The SASL listener itself: tests/integration/test_security_sasl.py."""

from __future__ import annotations

import ast
import ipaddress
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from processors.images import IPAddress, fetch_image_url
from streams.app import broker_credentials, create_app
from streams.cli import cli
from streams.errors import ConfigError, ProcessingError
from streams.events import InteractionAction, PinInteraction
from streams.producer import EventProducer
from streams.settings import load_settings
from streams.topics import PINS_INTERACTIONS

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for folder in ("streams", "processors", "sinks", "tests", "scripts")
           for p in sorted((ROOT / folder).rglob("*.py")) if p != Path(__file__).resolve()]
SECRET = "s3cr3t-Pa55-not-for-logs"
CLIENTS = ("Consumer", "Producer", "AdminClient")


def test_no_pickle_marshal_or_unsafe_torch_load_anywhere() -> None:
    unsafe = re.compile(r"\b(import\s+(c?pickle|marshal|shelve|dill|cloudpickle|joblib)\b|"
                        r"from\s+(c?pickle|marshal|shelve|dill|cloudpickle|joblib)\s+import|"
                        r"pickle\.loads?\(|marshal\.loads?\(|allow_pickle\s*=\s*True)")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES
             for n, line in enumerate(p.read_text().splitlines(), 1) if unsafe.search(line)]
    assert not found, found
    torch_loads = [(p, node) for p in SOURCES for node in ast.walk(ast.parse(p.read_text()))
                   if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("torch.load")]
    assert torch_loads, "the model is loaded somewhere: the scan must see it"
    for path, call in torch_loads:
        options = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert options.get("weights_only") == "True", f"{path.relative_to(ROOT)}:{call.lineno}"


def test_every_kafka_client_is_built_from_the_settings() -> None:
    """Producers, consumers and admin clients get their config from `Settings.kafka_*`, so the
    security protocol, SASL and SSL settings reach every one of them."""
    calls = []
    for path in SOURCES:
        if "tests" in path.relative_to(ROOT).parts or (path.name == "kafka.py" and "stack" in path.parts):
            continue  # tests use the settings too; the stack probe is handed a conf by its caller
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in CLIENTS:
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ast.unparse(node.args[0])))
    assert len(calls) >= 8
    stray = [(where, conf) for where, conf in calls
             if not re.search(r"\.kafka_(common|consumer|producer)\(", conf)]
    assert not stray, stray


def _sasl(**extra: Any) -> dict[str, Any]:
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc", "sasl_password": SECRET, "metrics_port": 0} | extra


def test_sasl_and_ssl_settings_reach_the_faust_worker() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(broker_credentials(load_settings(**_sasl())))
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc", SECRET)
    sasl_ssl = load_settings(**_sasl(security_protocol="SASL_SSL"))
    tls = credentials_to_aiokafka_auth(broker_credentials(sasl_ssl))
    assert tls["security_protocol"] == "SASL_SSL" and tls["ssl_context"] is not None
    assert credentials_to_aiokafka_auth(broker_credentials(
        load_settings(security_protocol="SSL", metrics_port=0)))["security_protocol"] == "SSL"
    app = create_app(sasl_ssl)
    assert app.conf.broker_credentials is not None
    assert all(url.scheme == "kafka" for url in app.conf.broker)
    assert app.transport is not None  # the broker URL names a transport faust has


def test_secrets_never_reach_logs_or_output(caplog: pytest.LogCaptureFixture,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"PINSTREAM_SASL_PASSWORD": SECRET, "PINSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "PINSTREAM_SASL_MECHANISM": "PLAIN", "PINSTREAM_SASL_USERNAME": "svc",
           "PINSTREAM_SCHEMA_REGISTRY_BASIC_AUTH": f"svc:{SECRET}", "PINSTREAM_SSL_KEY_PASSWORD": SECRET}
    shown = CliRunner().invoke(cli, ["config"], env=env)
    assert shown.exit_code == 0 and "svc" in shown.output
    settings = load_settings(**_sasl(bootstrap_servers="127.0.0.1:1", ssl_key_password=SECRET))
    logging.getLogger("pinstream.test").info("settings: %s %r %s", settings, settings, settings.redacted())
    with pytest.raises(ConfigError) as refused:  # an invalid value next to a secret
        load_settings(**_sasl(producer_linger_ms=-1))
    producer = EventProducer(settings)  # unreachable broker: errors are logged, never the password
    producer.send_event(PINS_INTERACTIONS, "u1", _interaction())
    producer.flush(2)
    producer.purge()
    producer.close(1)
    out, err = capfd.readouterr()
    for text in (shown.output, caplog.text, str(refused.value), out, err, repr(settings)):
        assert SECRET not in text


def _interaction() -> PinInteraction:
    return PinInteraction(user_id="u1", pin_id="p1", action=InteractionAction.CLICK, session_id="s")


# --- URL fetch: DNS names and redirects to internal targets --------------------------------------

PUBLIC = ipaddress.ip_address("93.184.216.34")


def _resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in table[host]]
    return resolve


@pytest.mark.parametrize("answers", [["10.0.0.7"], ["169.254.169.254"], ["127.0.0.1"],
                                     ["93.184.216.34", "192.168.1.2"], ["::ffff:10.0.0.1"], ["fd00::5"]])
def test_a_name_resolving_to_an_internal_address_is_refused_before_any_request(answers: list[str]) -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=b"image")

    client = httpx.Client(transport=httpx.MockTransport(answer))
    with pytest.raises(ProcessingError) as caught:
        fetch_image_url("http://images.example.com/a.jpg", max_bytes=1000, timeout_s=2, client=client,
                        resolver=_resolver({"images.example.com": answers}))
    assert caught.value.reason == "url_refused" and requests == []


def test_a_redirect_to_a_name_resolving_internally_is_refused() -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(302, headers={"Location": "http://metadata.internal/latest/meta-data"})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    resolve = _resolver({"cdn.example.com": [str(PUBLIC)], "metadata.internal": ["169.254.169.254"]})
    with pytest.raises(ProcessingError) as caught:
        fetch_image_url("http://cdn.example.com/a.jpg", max_bytes=1000, timeout_s=2, client=client,
                        resolver=resolve)
    assert caught.value.reason == "url_refused"
    assert [r.url.host for r in requests] == [str(PUBLIC)]  # connected to the vetted address only
    assert requests[0].headers["Host"] == "cdn.example.com"
