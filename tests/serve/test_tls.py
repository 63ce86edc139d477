"""https: `bertkit serve --ssl-certfile --ssl-keyfile` with a self-signed certificate made here (the
`cryptography` package), the OpenAI client talking https to it with a key; and certificate/key pairs that do
not work, refused in one line before the model loads."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import assert_user_error, free_port, run_process

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
x509 = pytest.importorskip("cryptography.x509", reason="the test extra is not installed (cryptography)")

KEY = "sk-tls-51d0e8f3a2"
SENTENCES = ["A man is playing a guitar.", "Someone is playing an instrument."]


def private_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def write_key(key, path: Path, password: bytes | None = None) -> Path:
    from cryptography.hazmat.primitives import serialization

    crypt = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt))
    return path


def self_signed(key, path: Path) -> Path:
    """A certificate for 127.0.0.1 and localhost, valid for a day, signed by its own key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bertkit test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    key = private_key()
    return {
        "cert": self_signed(key, folder / "cert.pem"),
        "key": write_key(key, folder / "key.pem"),
        "other_key": write_key(private_key(), folder / "other-key.pem"),
        "encrypted_key": write_key(key, folder / "encrypted-key.pem", b"hunter2"),
    }


@pytest.fixture(scope="module")
def https_server(pki, tmp_path_factory):
    port = free_port()
    cmd = [sys.executable, "-m", "bertkit.cli", "serve", "--port", str(port), "--ssl-certfile", str(pki["cert"]),
           "--ssl-keyfile", str(pki["key"]), "--api-key", KEY, "--log-level", "warning"]
    log = tmp_path_factory.mktemp("tls-log") / "stderr.txt"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(pki["cert"]))  # trust the test's own certificate
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/health", verify=trust, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "https server did not start"
                time.sleep(0.1)
        yield url, trust
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_openai_client_over_https_with_a_key(https_server, encoder):
    openai = pytest.importorskip("openai", reason="the test extra is not installed (openai)")
    url, trust = https_server
    with httpx.Client(verify=trust) as http:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, http_client=http, max_retries=0)
        resp = client.embeddings.create(input=SENTENCES, model="all-MiniLM-L6-v2")
        np.testing.assert_allclose([d.embedding for d in resp.data], encoder.encode(SENTENCES, normalize=True),
                                   atol=1e-5)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", http_client=http,
                          max_retries=0).embeddings.create(input="x", model="m")


def test_it_is_really_tls(https_server):
    url, _ = https_server
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/health", timeout=5)  # the system's CAs do not know the test's certificate
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/health", timeout=5)  # plain http is not served


# ----------------------------------------------------------------------------------------------------------
# Refused before the model loads (--model names no model: had it been loaded first, that would be the error)


def test_certificate_that_does_not_match_its_key(pki, tmp_path):
    result = run_process("serve", "--ssl-certfile", pki["cert"], "--ssl-keyfile", pki["other_key"],
                         "--model", tmp_path / "no-model")
    assert_user_error(result, "is not the key of --ssl-certfile", "key values mismatch")


def test_other_bad_certificates(pki, tmp_path):
    """The same OptionError the command turns into one line and exit 2 (shown above), for each kind of file."""
    from bertkit.errors import OptionError
    from bertkit.serve.tls import check_tls

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for cert, key, message in [
        (garbage, pki["key"], "not a usable PEM certificate and key"),
        (None, pki["key"], "--ssl-keyfile needs --ssl-certfile"),
        (tmp_path / "absent.pem", None, "absent.pem does not exist"),
        (pki["cert"], tmp_path / "absent-key.pem", "absent-key.pem does not exist"),
        (pki["cert"], pki["encrypted_key"], "is encrypted; serve an unencrypted key"),
        (pki["cert"], None, "not a usable PEM"),  # a certificate file without its key
    ]:
        with pytest.raises(OptionError, match=message):
            check_tls(cert, key)


def test_check_tls_accepts_the_pair(pki):
    from bertkit.serve.tls import check_tls

    check_tls(pki["cert"], pki["key"])
    check_tls(None, None)
